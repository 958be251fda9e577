import { execFileSync, spawnSync } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { scripts } from '../../src/lua/scripts'

/**
 * Lints every script as Redis runs it (the shared helpers, then the operation) with luacheck,
 * for Lua 5.1 with the globals Redis gives a script. A shared helper that one operation does
 * not use is fine; any other warning fails.
 */
describe('luacheck', () => {
  const dir = mkdtempSync(join(tmpdir(), 'creditgate-luacheck-'))
  afterAll(() => {
    rmSync(dir, { recursive: true, force: true })
  })

  it('is installed (apt-get install lua-check)', () => {
    const probe = spawnSync('luacheck', ['--version'], { encoding: 'utf8' })
    expect(probe.error).toBeUndefined()
  })

  it.each(Object.values(scripts).map((def) => [def.name, def] as const))(
    'finds nothing wrong in the %s script',
    (name, def) => {
      const file = join(dir, `${name}.lua`)
      writeFileSync(file, def.bareSource)
      let out = ''
      try {
        out = execFileSync(
          'luacheck',
          [
            '--std',
            'lua51',
            '--globals',
            'redis',
            'KEYS',
            'ARGV',
            '--no-max-line-length',
            '--codes',
            '--formatter',
            'plain',
            file,
          ],
          { encoding: 'utf8' },
        )
      } catch (error) {
        out = (error as { stdout?: string }).stdout ?? ''
      }
      // The operation's own code starts at its header, the last `--[[` of the composed source.
      const ownLine = def.bareSource
        .slice(0, def.bareSource.lastIndexOf('\n--[['))
        .split('\n').length
      const problems = out
        .split('\n')
        .filter((line) => line.trim() !== '')
        .filter((line) => {
          const match = /:(\d+):\d+: \(W211\) unused function/.exec(line)
          return match === null || Number(match[1]) > ownLine
        })
      expect(problems).toEqual([])
    },
  )
})

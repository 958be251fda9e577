// Node module hooks for a child process that runs the library from source under tsx: a `.lua`
// import becomes a module whose default export is the file's text, as tsup's text loader and
// the jest transformer (test/support/lua-transform.cjs) make it.
import { readFile } from 'node:fs/promises'

export async function load(url, context, nextLoad) {
  if (url.startsWith('file:') && url.endsWith('.lua')) {
    const text = await readFile(new URL(url), 'utf8')
    return {
      format: 'module',
      source: `export default ${JSON.stringify(text)};`,
      shortCircuit: true,
    }
  }
  return nextLoad(url, context)
}

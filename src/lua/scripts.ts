import { createHash } from 'node:crypto'

import balanceSource from './balance.lua'
import claimSource from './claim.lua'
import grantSource from './grant.lua'
import lib from './lib.lua'
import openSource from './open.lua'
import reserveSource from './reserve.lua'
import resolveSource from './resolve.lua'

/** One script in the two forms the runner may send. */
export interface ScriptDef {
  readonly name: string
  readonly numberOfKeys: number
  /**
   * With the `#!lua` shebang: Redis 7 refuses such a script up front when it is out of memory,
   * instead of running it until a write fails half-way (Lua has no rollback).
   */
  readonly source: string
  readonly sha1: string
  /** Without the shebang, for servers that do not know it (Redis 6, ioredis-mock). */
  readonly bareSource: string
  readonly bareSha1: string
}

const sha1 = (text: string): string => createHash('sha1').update(text).digest('hex')

function define(name: string, numberOfKeys: number, body: string, withLib = true): ScriptDef {
  const bareSource = withLib ? `${lib}\n${body}` : body
  const source = `#!lua\n${bareSource}`
  return Object.freeze({
    name,
    numberOfKeys,
    source,
    sha1: sha1(source),
    bareSource,
    bareSha1: sha1(bareSource),
  })
}

/** Every script of the ledger, composed once at module load. */
export const scripts = Object.freeze({
  open: define('open', 4, openSource),
  reserve: define('reserve', 4, reserveSource),
  resolve: define('resolve', 4, resolveSource),
  balance: define('balance', 4, balanceSource),
  grant: define('grant', 5, grantSource),
  claim: define('claim', 1, claimSource, false),
})

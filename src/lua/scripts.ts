import { createHash } from 'node:crypto'

import analytics from './analytics.lua'
import auditSource from './audit.lua'
import balanceSource from './balance.lua'
import calendar from './calendar.lua'
import claimSource from './claim.lua'
import endSubscriptionSource from './end-subscription.lua'
import grantSource from './grant.lua'
import lib from './lib.lua'
import maintainSource from './maintain.lua'
import openSource from './open.lua'
import recordUsageSource from './record-usage.lua'
import reserveSource from './reserve.lua'
import resolveSource from './resolve.lua'
import subscribeSource from './subscribe.lua'
import transactionsSource from './transactions.lua'
import unlockSource from './unlock.lua'
import usageQuerySource from './usage-query.lua'

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

/** The helpers every account script starts with: the calendar, then lib (which uses it). */
const LIB = `${calendar}\n${lib}`

function define(name: string, numberOfKeys: number, body: string, withLib = true): ScriptDef {
  const bareSource = withLib ? `${LIB}\n${body}` : body
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
  resolve: define('resolve', 7, `${analytics}\n${resolveSource}`),
  balance: define('balance', 4, balanceSource),
  grant: define('grant', 5, grantSource),
  claim: define('claim', 1, claimSource, false),
  subscribe: define('subscribe', 5, subscribeSource),
  endSubscription: define('endSubscription', 4, endSubscriptionSource),
  transactions: define('transactions', 4, transactionsSource),
  audit: define('audit', 4, auditSource),
  recordUsage: define('recordUsage', 7, `${analytics}\n${recordUsageSource}`),
  usageQuery: define('usageQuery', 7, `${analytics}\n${usageQuerySource}`),
  maintain: define('maintain', 4, maintainSource),
  unlock: define('unlock', 1, unlockSource, false),
})

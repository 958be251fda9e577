import { existsSync } from 'node:fs'
import type { Server } from 'node:http'
import type { AddressInfo } from 'node:net'

import type { Redis } from 'ioredis'
import { chromium, type Browser, type Page } from 'playwright-core'

import { createApp } from '../../examples/quant-api/app'
import { mockRedis } from '../helpers/redis'

const CHROMIUM = process.env['CHROMIUM_PATH'] ?? '/usr/bin/chromium'

/**
 * The page's `document`, typed by hand: this file is compiled without the DOM library. Page
 * functions are passed as functions, not strings, which the dashboard's CSP would refuse to eval,
 * and they may not close over this module: each reaches `document` through `globalThis`.
 */
interface PageDocument {
  getElementById(id: string): { readonly textContent: string | null } | null
  querySelectorAll(selector: string): ArrayLike<{ getAttribute(name: string): string | null }>
}

describe('the demo dashboard in headless Chromium', () => {
  let redis: Redis
  let server: Server
  let browser: Browser
  let base: string

  beforeAll(async () => {
    if (!existsSync(CHROMIUM)) {
      throw new Error(
        `the dashboard test needs Chromium at ${CHROMIUM}: apt-get install -y chromium (or set CHROMIUM_PATH)`,
      )
    }
    redis = mockRedis()
    server = createApp({ redis }).app.listen(0, '127.0.0.1')
    await new Promise((r) => server.once('listening', r))
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    })
  }, 60_000)

  afterAll(async () => {
    // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- unset when Chromium is missing
    await browser?.close()
    await new Promise((r) => server.close(r))
    redis.disconnect()
  })

  async function balanceIs(page: Page, text: string): Promise<void> {
    await page.waitForFunction(
      (t) =>
        (globalThis as unknown as { document: PageDocument }).document.getElementById('balance')
          ?.textContent === t,
      text,
      {
        timeout: 10_000,
      },
    )
  }

  it('logs in, makes calls, and shows the balance change, the usage chart and the transactions', async () => {
    const page = await browser.newPage()
    const outside: string[] = []
    page.on('request', (req) => {
      if (!req.url().startsWith(base)) outside.push(req.url())
    })
    await page.goto(`${base}/dashboard`)
    await page.fill('#email', `dash${Date.now()}@example.com`)
    await page.fill('#password', 'correct horse')
    await page.click('#register-btn')
    await balanceIs(page, '350')
    expect(await page.textContent('#account-type')).toBe('registered')
    expect(await page.locator('#grants tr').count()).toBe(1)

    await page.click('#call-pro')
    await balanceIs(page, '345')
    await page.click('#call-standard')
    await balanceIs(page, '343')
    await page.click('#call-bad')
    await page.waitForFunction(
      () =>
        (globalThis as unknown as { document: PageDocument }).document
          .getElementById('status')
          ?.textContent?.startsWith('400') === true,
    )
    await page.click('#call-free')
    await page.waitForFunction(
      () =>
        (globalThis as unknown as { document: PageDocument }).document
          .getElementById('status')
          ?.textContent?.startsWith('200') === true,
    )
    await balanceIs(page, '343')

    await page.click('#buy-500')
    await balanceIs(page, '843')

    // The chart draws the calls of this hour; the transactions list every movement.
    await page.waitForFunction(() =>
      Array.from(
        (globalThis as unknown as { document: PageDocument }).document.querySelectorAll(
          '#usage-chart rect.bar',
        ),
      ).some((r) => Number(r.getAttribute('data-requests')) >= 4),
    )
    expect(await page.locator('#usage-chart rect.bar').count()).toBeGreaterThanOrEqual(24)
    const kinds = await page.locator('#transactions tr td:nth-child(2)').allTextContents()
    expect(kinds).toEqual(['grant', 'charge', 'charge', 'grant'])
    await page.screenshot({
      path: `${process.env['TMPDIR'] ?? '/tmp'}/creditgate-dashboard.png`,
      fullPage: true,
    })
    expect(outside).toEqual([])
    await page.close()
  }, 60_000)
})

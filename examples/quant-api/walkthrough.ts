/**
 * The curl walkthrough the demo prints at start-up. A test runs exactly these lines, in one
 * bash session, against the demo app: what a newcomer copies is what CI checks.
 */
export interface Step {
  readonly say: string
  readonly run: string
}

export const walkthrough: readonly Step[] = [
  {
    say: 'Register: 350 credits that never expire (the token is kept in $TOKEN)',
    run: `TOKEN=$(curl -s -X POST "$BASE/auth/register" -H 'content-type: application/json' -d "{\\"email\\":\\"ada-$RANDOM$RANDOM@example.com\\",\\"password\\":\\"correct horse\\"}" | node -pe 'JSON.parse(require("fs").readFileSync(0, "utf8")).data.token')`,
  },
  {
    say: 'Your balance and account type',
    run: `curl -s "$BASE/user/profile" -H "authorization: Bearer $TOKEN"; echo`,
  },
  {
    say: 'A free call: is it a business day?',
    run: `curl -s "$BASE/quantlib/calendar/business-day?date=2026-11-24" -H "authorization: Bearer $TOKEN"; echo`,
  },
  {
    say: 'A standard call (2 credits): Black–Scholes; note the X-Credits-* headers',
    run: `curl -si "$BASE/quantlib/options/black-scholes?spot=100&strike=100&rate=0.05&volatility=0.2&years=1&kind=call" -H "authorization: Bearer $TOKEN" | grep -iE '^(HTTP|x-credits)|price'`,
  },
  {
    say: 'A pro call (5 credits): historical value-at-risk',
    run: `curl -s "$BASE/quantlib/risk/var?confidence=0.95&position=1000000&returns=-0.021,0.004,0.013,-0.008,0.011,-0.032,0.006,0.002,-0.015,0.009,0.017,-0.004" -H "authorization: Bearer $TOKEN"; echo`,
  },
  {
    say: 'Bad parameters answer 400 and cost nothing',
    run: `curl -s "$BASE/quantlib/options/black-scholes?spot=-1&strike=100&rate=0.05&volatility=0.2&years=1" -H "authorization: Bearer $TOKEN"; echo`,
  },
  {
    say: 'Buy a pack of 500 credits (the demo signs the payment webhook for you)',
    run: `curl -s -X POST "$BASE/billing/checkout" -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' -d '{"pack":"pack_500"}'; echo`,
  },
  {
    say: 'Every credit movement, newest first',
    run: `curl -s "$BASE/user/transactions?limit=5" -H "authorization: Bearer $TOKEN"; echo`,
  },
  {
    say: 'Usage per endpoint over the last 30 days (the daily series is in .data.series)',
    run: `curl -s "$BASE/user/usage?granularity=day" -H "authorization: Bearer $TOKEN" | node -pe 'const { summary, endpoints } = JSON.parse(require("fs").readFileSync(0, "utf8")).data; JSON.stringify({ summary, endpoints }, null, 1)'`,
  },
]

/** The walkthrough as the demo prints it: one block to paste into a shell. */
export function printWalkthrough(base: string): string {
  const lines = [`BASE=${base}`]
  for (const step of walkthrough) lines.push('', `# ${step.say}`, step.run)
  return lines.join('\n')
}

/** The middle value (the mean of the two middle ones for an even count); NaN for none. */
export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  if (sorted.length === 0) return Number.NaN
  const mid = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1
    ? (sorted[mid] ?? Number.NaN)
    : ((sorted[mid - 1] ?? 0) + (sorted[mid] ?? 0)) / 2
}

/** `median (min–max)`, each number written by `format`. */
export function medianRange(
  values: readonly number[],
  format: (n: number) => string = (n) => n.toFixed(0),
): string {
  return `${format(median(values))} (${format(Math.min(...values))}–${format(Math.max(...values))})`
}

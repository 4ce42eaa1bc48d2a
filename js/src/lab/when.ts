// Times in the conversation list: "5 minutes ago" on screen, the full date in the tooltip.
//
// The Intl formatters are made once: making one per entry was a large part of the cost of
// showing a page of the list.

const relative = new Intl.RelativeTimeFormat(undefined, { numeric: 'auto' });
const full = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });

const UNITS: [Intl.RelativeTimeFormatUnit, number][] = [
  ['year', 365 * 24 * 3600],
  ['month', 30 * 24 * 3600],
  ['week', 7 * 24 * 3600],
  ['day', 24 * 3600],
  ['hour', 3600],
  ['minute', 60]
];

/** "just now", "5 minutes ago", "yesterday", ... for `when`, seen at `now`. */
export function howLongAgo(when: Date, now: number = Date.now()): string {
  const seconds = Math.round((when.getTime() - now) / 1000);
  for (const [unit, size] of UNITS) {
    if (Math.abs(seconds) >= size) {
      return relative.format(Math.round(seconds / size), unit);
    }
  }
  return 'just now';
}

export function fullDate(when: Date): string {
  return full.format(when);
}

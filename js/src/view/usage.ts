// The quiet line under a finished reply that says what producing it took: model, tokens and
// speed, from the reply's `usage` (see protocol.ts). Kept apart from the DOM so the wording is
// tested alone.

import type { Usage } from './protocol';

export interface UsageText {
  /** One short line, e.g. "gpt-4.1-mini · 1,234 tokens · 56.7 tokens/s", or "took 3.7 s"
   * when only the time is known; '' when nothing is known. */
  line: string;
  /** Every known figure in words, for a tooltip. */
  detail: string;
}

/**
 * Output tokens per second of generation. The time to the first token is mostly the model
 * reading the prompt, so it is left out when known; without it, the whole duration counts.
 */
export function tokensPerSecond(usage: Usage): number | null {
  const { outputTokens, firstTokenSeconds, durationSeconds } = usage;
  if (outputTokens === undefined || durationSeconds === undefined) {
    return null;
  }
  const generating =
    firstTokenSeconds !== undefined && durationSeconds > firstTokenSeconds
      ? durationSeconds - firstTokenSeconds
      : durationSeconds;
  return generating > 0 ? outputTokens / generating : null;
}

/** The usage as words; parts that are unknown are left out. `locale` is the user's by default. */
export function describeUsage(usage: Usage, locale?: string): UsageText {
  const count = (n: number) => n.toLocaleString(locale);
  const decimal = (n: number) =>
    n.toLocaleString(locale, { minimumFractionDigits: 1, maximumFractionDigits: 1 });
  const tokens = (n: number) => `${count(n)} ${n === 1 ? 'token' : 'tokens'}`;

  const line: string[] = [];
  if (usage.model) {
    line.push(usage.model);
  }
  if (usage.outputTokens !== undefined) {
    line.push(tokens(usage.outputTokens));
  }
  const rate = tokensPerSecond(usage);
  if (rate !== null) {
    line.push(`${decimal(rate)} tokens/s`);
  } else if (usage.durationSeconds !== undefined) {
    // A bare "3.7 s" does not say what it measures.
    line.push(`took ${decimal(usage.durationSeconds)} s`);
  }

  const detail: string[] = [];
  if (usage.model) {
    detail.push(`model: ${usage.model}`);
  }
  if (usage.inputTokens !== undefined) {
    detail.push(`input: ${tokens(usage.inputTokens)}`);
  }
  if (usage.outputTokens !== undefined) {
    detail.push(`output: ${tokens(usage.outputTokens)}`);
  }
  if (usage.firstTokenSeconds !== undefined) {
    detail.push(`first token after ${decimal(usage.firstTokenSeconds)} s`);
  }
  if (usage.durationSeconds !== undefined) {
    detail.push(`${decimal(usage.durationSeconds)} s in all`);
  }
  const sentence = detail.join(', ');
  return { line: line.join(' · '), detail: sentence.charAt(0).toUpperCase() + sentence.slice(1) };
}

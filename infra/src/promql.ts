/** PromQL words that are not metric names: aggregations, functions, modifiers and keywords. */
const KEYWORDS = new Set(
  'sum min max avg count stddev stdvar topk bottomk quantile count_values group by without on ignoring group_left group_right and or unless offset bool inf nan'.split(
    ' ',
  ),
);

/**
 * The metric names an expression reads: identifiers that are not functions (followed by "("),
 * keywords, label names in by/on/without lists, label matchers, strings or durations.
 */
export function metricNames(expr: string): string[] {
  const text = expr
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'/g, ' ')
    .replace(/\{[^}]*\}/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ')
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ');
  const names = new Set<string>();
  for (const m of text.matchAll(/[a-zA-Z_:][a-zA-Z0-9_:]*(\s*\()?/g)) {
    const word = m[0].replace(/\s*\($/, '');
    if (m[1] !== undefined || KEYWORDS.has(word) || /^\d/.test(word)) continue;
    // A number such as 1e3 or a duration such as 5m in an offset reads as an identifier tail only after digits.
    if (/^[eE]\d*$/.test(word)) continue;
    names.add(word);
  }
  return [...names];
}

// Go duration strings ("300ms", "1.5h", "2h45m", "10s"), as the original's flags
// took them. Returns milliseconds.

const UNITS: Record<string, number> = {
  ns: 1e-6,
  us: 1e-3,
  µs: 1e-3,
  μs: 1e-3,
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
};

export function parseDuration(input: string): number {
  const s = input.trim();
  if (s === '0') return 0;
  let rest = s;
  let sign = 1;
  if (rest.startsWith('-') || rest.startsWith('+')) {
    if (rest[0] === '-') sign = -1;
    rest = rest.slice(1);
  }
  if (rest === '') throw new Error(`invalid duration ${JSON.stringify(input)}`);
  let total = 0;
  const re = /^(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)/;
  while (rest.length > 0) {
    const m = re.exec(rest);
    if (!m) throw new Error(`invalid duration ${JSON.stringify(input)} (examples: 500ms, 10s, 1m30s)`);
    total += parseFloat(m[1]!) * UNITS[m[2]!]!;
    rest = rest.slice(m[0].length);
  }
  return sign * total;
}

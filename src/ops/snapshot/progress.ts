// Progress of a snapshot save or restore on stderr: a bar redrawn in place when
// stderr is a terminal, otherwise one line at most once a second.

export class Progress {
  private done = 0;
  private lastPrint = 0;
  private readonly tty: boolean;

  constructor(
    private readonly what: string,
    private readonly total: number,
    private readonly out: NodeJS.WriteStream = process.stderr,
  ) {
    this.tty = out.isTTY === true;
  }

  add(n: number): void {
    this.done += n;
    const now = Date.now();
    if (now - this.lastPrint < (this.tty ? 100 : 1000)) return;
    this.lastPrint = now;
    this.print();
  }

  finish(summary: string): void {
    if (this.tty) this.out.write('\r\x1b[K');
    this.out.write(`${summary}\n`);
  }

  private print(): void {
    const pct = this.total > 0 ? Math.min(1, this.done / this.total) : 1;
    if (this.tty) {
      const width = 30;
      const filled = Math.round(pct * width);
      this.out.write(`\r\x1b[K${this.what} [${'#'.repeat(filled)}${' '.repeat(width - filled)}] ${this.done}/${this.total} keys`);
    } else {
      this.out.write(`${this.what}: ${this.done}/${this.total} keys (${Math.floor(pct * 100)}%)\n`);
    }
  }
}

// Reconnection delays: exponential, capped, with "equal jitter" (a uniform draw in the upper
// half) so that a fleet of clients dropped at once does not reconnect in lockstep.

export class Backoff {
  private attempt = 0;
  private readonly max: number;

  /** Delays from `baseMs` doubling to `maxMs`; `random` returns a number in [0, 1) (injectable for tests). */
  constructor(
    private readonly baseMs: number,
    maxMs: number,
    private readonly random: () => number = Math.random,
  ) {
    this.max = Math.max(maxMs, baseMs);
  }

  /** The ceiling of the next delay: `base * 2^attempt`, at most `max`. */
  ceiling(): number {
    return Math.min(this.baseMs * 2 ** Math.min(this.attempt, 52), this.max);
  }

  /** The next delay in milliseconds, uniform in `[ceiling / 2, ceiling]`; each call doubles the ceiling. */
  nextDelay(): number {
    const ceiling = this.ceiling();
    this.attempt += 1;
    const half = ceiling / 2;
    return half + this.random() * (ceiling - half);
  }

  /** Starts over from `base` (after a connection that delivered events). */
  reset(): void {
    this.attempt = 0;
  }
}

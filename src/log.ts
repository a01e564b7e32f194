/**
 * A process's log with a level that can change while it runs (the admin API's log-level action).
 * Lines go to one writer (stderr by default); below the level they are dropped before formatting
 * costs anything more than the call.
 * @module
 */

export const LOG_LEVELS = ["error", "warn", "info", "debug"] as const;
export type LogLevel = typeof LOG_LEVELS[number];

export class Logger {
  #rank: number;
  readonly #write: (line: string) => void;

  constructor(
    write: (line: string) => void = (line) => console.error(line),
    level: LogLevel = "info",
  ) {
    this.#write = write;
    this.#rank = LOG_LEVELS.indexOf(level);
  }

  get level(): LogLevel {
    return LOG_LEVELS[this.#rank];
  }

  set level(level: LogLevel) {
    const rank = LOG_LEVELS.indexOf(level);
    if (rank < 0) {
      throw new RangeError(`Log level "${level}" is not one of ${LOG_LEVELS.join(", ")}`);
    }
    this.#rank = rank;
  }

  enabled(level: LogLevel): boolean {
    return LOG_LEVELS.indexOf(level) <= this.#rank;
  }

  error(line: string): void {
    if (this.#rank >= 0) this.#write(line);
  }

  warn(line: string): void {
    if (this.#rank >= 1) this.#write(line);
  }

  info(line: string): void {
    if (this.#rank >= 2) this.#write(line);
  }

  debug(line: string): void {
    if (this.#rank >= 3) this.#write(line);
  }
}

/**
 * The kernel's switch for FUSE over io_uring during a bench run: the kernel offers the ring only
 * while `/sys/module/fuse/parameters/enable_uring` is on (off by default), so the `skyfs-uring`
 * target can be measured only then. The bench turns it on for its run when it can (root) and puts
 * it back as it was at the end, as scripts/test.sh does for its tests-uring step.
 * @module
 */

export const ENABLE_URING = "/sys/module/fuse/parameters/enable_uring";

/** The switch as a bench run found and left it. */
export interface UringSwitch {
  /** Null when FUSE over io_uring is on for the run; else one line saying why it is not. */
  unavailable: string | null;
  /** What the switch read at the start ("Y", "N"), null when there is no such file. */
  before: string | null;
  /** Whether this run turned it on (then `restore()` turns it off again). */
  changed: boolean;
  /**
   * Puts the switch back as it was; only the first call acts. Returns a line for the log, or null
   * when there was nothing to put back.
   */
  restore(): string | null;
}

/** A kernel boolean parameter reads "Y" or "N"; "1" and "0" are what one writes. */
function isOn(value: string): boolean {
  return /^(Y|1)$/i.test(value.trim());
}

function reasonOf(error: unknown): string {
  if (error instanceof Deno.errors.PermissionDenied) return "needs root";
  return error instanceof Error ? error.message : String(error);
}

/**
 * Turns the switch at `path` on unless `leave` (config key bench.no_uring_switch) or it is on
 * already. Never throws: what went wrong is `unavailable`.
 */
export function turnOnUring(path = ENABLE_URING, leave = false): UringSwitch {
  let before: string;
  try {
    before = Deno.readTextFileSync(path).trim();
  } catch (error) {
    const why = error instanceof Deno.errors.NotFound
      ? `no ${path}: this kernel has no FUSE over io_uring (CONFIG_FUSE_IO_URING, Linux 6.14+)`
      : `cannot read ${path}: ${reasonOf(error)}`;
    return { unavailable: why, before: null, changed: false, restore: () => null };
  }
  const unchanged = (unavailable: string | null): UringSwitch => ({
    unavailable,
    before,
    changed: false,
    restore: () => null,
  });
  if (isOn(before)) return unchanged(null);
  if (leave) {
    return unchanged(
      `the kernel's FUSE over io_uring is off (${path} is ${before}) and bench.no_uring_switch ` +
        "(--no-uring-switch) leaves it so",
    );
  }
  try {
    Deno.writeTextFileSync(path, "1");
  } catch (error) {
    return unchanged(
      `the kernel's FUSE over io_uring is off (${path} is ${before}) and the bench cannot turn ` +
        `it on: ${reasonOf(error)}`,
    );
  }
  let restored = false;
  return {
    unavailable: null,
    before,
    changed: true,
    restore() {
      if (restored) return null;
      restored = true;
      let during = "";
      try {
        // Something else (another test run on this machine) may have turned it off meanwhile:
        // FUSE over io_uring then failed from that moment, so say so beside the figures.
        if (!isOn(Deno.readTextFileSync(path))) {
          during = " (it had been turned off during the run by something else)";
        }
        Deno.writeTextFileSync(path, "0");
      } catch (error) {
        return `bench: could not put ${path} back to ${before}: ${reasonOf(error)}`;
      }
      return `bench: ${path} put back to ${before}${during}`;
    },
  };
}

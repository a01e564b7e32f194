/**
 * Shapes of the benchmark's raw results (the JSON under bench/results/) and of the run settings.
 * @module
 */

/** Names of the targets the harness knows, in the column order of every table and chart. */
export const TARGET_NAMES = [
  "ext4",
  "skyfs",
  "skyfs-http-off",
  "skyfs-uring",
  "skyfs-shim",
  "skyfs-cluster",
  "skyfs-cluster-etcd",
  "bindfs",
  "mergerfs",
] as const;
export type TargetName = typeof TARGET_NAMES[number];
/** The targets that start a whole cluster (metadata store, backend, two mounts). */
export const CLUSTER_TARGETS: readonly TargetName[] = ["skyfs-cluster", "skyfs-cluster-etcd"];

/** Job families that `--only` selects; "datenlord" is optional and runs only when named. */
export const FAMILY_GROUPS = [
  "fio",
  "meta",
  "io",
  "cluster",
  "datenlord",
  "wan",
  "zones",
] as const;
export type FamilyGroup = typeof FAMILY_GROUPS[number];
export const DEFAULT_FAMILY_GROUPS: readonly FamilyGroup[] = ["fio", "meta", "io", "cluster"];

/** One figure: one job on one target. */
export interface Measurement {
  /** Chart family, e.g. "seq-read" or "meta-flat"; one SVG per family. */
  family: string;
  /** Job name, unique across the run, e.g. "seq-read-1m-j1-warm". */
  job: string;
  /** Target (column) name; for the io family these are engines rather than file systems. */
  target: string;
  /** Unit of `value`: "MiB/s", "IOPS" or "ops/s". */
  unit: string;
  /** Null when the job failed on this target; `error` says why. */
  value: number | null;
  higherIsBetter: boolean;
  error?: string;
  /** Secondary figures (latency percentiles, bytes moved, seconds) kept in the JSON only. */
  details?: Record<string, number | string>;
}

export type TargetState = "ok" | "failed" | "unavailable" | "not-selected";

/** What happened to one target: mounted and measured, or why it was skipped. */
export interface TargetReport {
  name: string;
  state: TargetState;
  /** One line: "failed to mount: ..." or "not available yet: ...". */
  reason?: string;
  /** How the target was mounted, so a reader can repeat it. */
  command?: string;
  /** Directory the jobs ran in. */
  dir?: string;
}

export interface MachineInfo {
  hostname: string;
  kernel: string;
  cpu: string;
  cpus: number;
  memoryGiB: number;
  scratchFs: string;
  fio: string;
  deno: string;
  /** /proc/loadavg's 1-minute figure at the start and the end: other work skews a run. */
  loadAverage?: { start: number; end: number };
}

export type Mode = "full" | "quick" | "tiny";

/** The whole run as written to bench/results/<stamp>.json. */
export interface RunResult {
  formatVersion: 1;
  startedAt: string;
  finishedAt: string;
  mode: Mode;
  /** The command line as a user would type it. */
  command: string;
  machine: MachineInfo;
  targets: TargetReport[];
  /** Families that could not run at all (missing tool or entry point), with the reason. */
  skippedFamilies: { family: string; reason: string }[];
  /** Baseline column of each family for the ratios; families not listed use "ext4". */
  baselines: Record<string, string>;
  measurements: Measurement[];
}

/** Sizes and durations of one mode. Durations are fio time strings ("5s", "300ms"). */
export interface ModeSettings {
  /** Size of each read or write file, one per fio job slot. */
  fileSize: string;
  /** Duration of time-based jobs (warm reads, writes). */
  runtime: string;
  /** Cap on size-based jobs (cold reads: one pass over the data, or this long). */
  coldRuntimeCap: string;
  /** Size of each file of the DatenLord sweep (up to 32 jobs, one file each). */
  sweepFileSize: string;
  /** Size of the crc32c write-and-verify file. */
  verifySize: string;
  /** Files per metadata run (split across workers). */
  metaFiles: number;
  /** Bytes written into each metadata file. */
  metaFileBytes: number;
  /** Files per metadata run on the cluster targets: a cluster create costs milliseconds today
   * (issue 13), so they get fewer files to keep the run's length; rates are per second alike. */
  clusterMetaFiles: number;
}

export const MODE_SETTINGS: Record<Mode, ModeSettings> = {
  full: {
    fileSize: "128M",
    runtime: "4s",
    coldRuntimeCap: "4s",
    sweepFileSize: "32M",
    verifySize: "64M",
    metaFiles: 5000,
    metaFileBytes: 1024,
    clusterMetaFiles: 500,
  },
  quick: {
    fileSize: "16M",
    runtime: "400ms",
    coldRuntimeCap: "400ms",
    sweepFileSize: "8M",
    verifySize: "16M",
    metaFiles: 1000,
    metaFileBytes: 1024,
    clusterMetaFiles: 200,
  },
  tiny: {
    fileSize: "4M",
    runtime: "200ms",
    coldRuntimeCap: "200ms",
    sweepFileSize: "1M",
    verifySize: "2M",
    metaFiles: 200,
    metaFileBytes: 1024,
    clusterMetaFiles: 40,
  },
};

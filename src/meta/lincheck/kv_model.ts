/**
 * The key-value model the CURP simulator's histories are checked against: get, put (returning the
 * previous value), delete (returning how many keys it removed), compare-and-set and merge (MetaKV
 * `merge`, optionally behind a compare that ignores the merged bytes), one key each, so histories
 * split by key.
 * @module
 */

import { checkOperations, type CheckOptions, type Model, type Operation } from "./porcupine.ts";
import { applyMerge, type MergeRequest } from "../kv.ts";

export type KvInput =
  | { kind: "get"; key: string; value?: undefined; expected?: undefined }
  | { kind: "put"; key: string; value: string; expected?: undefined }
  | { kind: "delete"; key: string; value?: undefined; expected?: undefined }
  | { kind: "cas"; key: string; expected: string | null; value: string }
  | {
    kind: "merge";
    key: string;
    /** Applied only when the value equals this outside the merged bytes (MetaKV compare with
     * `ignore` = the merge's fields); absent: always. */
    expected?: string;
    value?: undefined;
    merge: MergeFields;
  };

/** A MetaKV merge's fields (kv.ts `MergeRequest` without its key). */
export type MergeFields = Omit<MergeRequest, "key">;

/** The byte ranges a merge changes: what a compare beside it ignores. */
export function mergedRanges(m: MergeFields): { at: number; width: number }[] {
  return [
    ...(m.max ?? []).map((f) => ({ at: f.at, width: 12 })),
    ...(m.add ?? []).map((f) => ({ at: f.at, width: f.width })),
  ];
}

/** A string of byte-valued chars (keyString's form) as bytes, and back. */
function bytesOf(s: string): Uint8Array {
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

function stringOf(b: Uint8Array): string {
  let s = "";
  for (const x of b) s += String.fromCharCode(x);
  return s;
}

function fits(m: MergeFields, length: number): boolean {
  return mergedRanges(m).every((r) => r.at + r.width <= length);
}

export type KvOutput =
  | { value: string | null }
  | { deleted: number }
  | { succeeded: boolean };

export interface KvOperation extends Operation<KvInput, KvOutput> {
  clientId: string;
}

type State = string | null;

export const kvModel: Model<State, KvInput, KvOutput> = {
  init: () => null,
  key: (s) => (s === null ? "\u0000null" : "=" + s),
  step(state, input, output) {
    switch (input.kind) {
      case "get":
        return {
          ok: output === undefined || (output as { value: State }).value === state,
          next: state,
        };
      case "put":
        return {
          ok: output === undefined || (output as { value: State }).value === state,
          next: input.value,
        };
      case "delete":
        return {
          ok: output === undefined ||
            (output as { deleted: number }).deleted === (state === null ? 0 : 1),
          next: null,
        };
      case "cas": {
        const holds = state === input.expected;
        return {
          ok: output === undefined || (output as { succeeded: boolean }).succeeded === holds,
          next: holds ? input.value : state,
        };
      }
      case "merge": {
        // A merge of a missing key (or one too short for its fields: refused, no output) writes
        // nothing; the compare, when present, ignores the merged bytes.
        const holds = input.expected === undefined ||
          (state !== null && equalOutside(state, input.expected, mergedRanges(input.merge)));
        const applies = holds && state !== null && fits(input.merge, state.length);
        return {
          ok: output === undefined || (output as { succeeded: boolean }).succeeded === holds,
          next: applies
            ? stringOf(applyMerge({ key: new Uint8Array(0), ...input.merge }, bytesOf(state!)))
            : state,
        };
      }
    }
  },
  partition(history) {
    const byKey = new Map<string, Operation<KvInput, KvOutput>[]>();
    for (const op of history) {
      const list = byKey.get(op.input.key);
      if (list === undefined) byKey.set(op.input.key, [op]);
      else list.push(op);
    }
    return [...byKey.values()];
  },
};

function equalOutside(a: string, b: string, ignore: { at: number; width: number }[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) {
    if (a[i] !== b[i] && !ignore.some((r) => i >= r.at && i < r.at + r.width)) return false;
  }
  return true;
}

/** Check a KV history: true linearizable, false not, undefined undecided within the budget. */
export function checkKvHistory(
  history: Operation<KvInput, KvOutput>[],
  options: CheckOptions = {},
): boolean | undefined {
  return checkOperations(kvModel, history, options);
}

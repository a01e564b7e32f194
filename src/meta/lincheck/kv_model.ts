/**
 * The key-value model the CURP simulator's histories are checked against: get, put (returning the
 * previous value), delete (returning how many keys it removed) and compare-and-set, one key each,
 * so histories split by key.
 * @module
 */

import { checkOperations, type CheckOptions, type Model, type Operation } from "./porcupine.ts";

export type KvInput =
  | { kind: "get"; key: string; value?: undefined; expected?: undefined }
  | { kind: "put"; key: string; value: string; expected?: undefined }
  | { kind: "delete"; key: string; value?: undefined; expected?: undefined }
  | { kind: "cas"; key: string; expected: string | null; value: string };

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

/** Check a KV history: true linearizable, false not, undefined undecided within the budget. */
export function checkKvHistory(
  history: Operation<KvInput, KvOutput>[],
  options: CheckOptions = {},
): boolean | undefined {
  return checkOperations(kvModel, history, options);
}

/**
 * Linearizability checking with Porcupine's algorithm (Wing & Gong's search with Lowe's
 * memoization of (linearized set, state) pairs), written in TypeScript.
 *
 * A history is a set of operations with call and return times; an operation still running at the
 * end has return = Infinity and output undefined (it may have taken effect or not).
 * @module
 */

export interface Operation<I, O> {
  input: I;
  /** Undefined when the operation never returned: any output is accepted. */
  output: O | undefined;
  call: number;
  return: number;
}

export interface Model<S, I, O> {
  init(): S;
  /** Whether `output` is legal for `input` in `state`, and the next state if so. */
  step(state: S, input: I, output: O | undefined): { ok: boolean; next: S };
  /** A string equal for equal states (memoization key). */
  key(state: S): string;
  /** Split a history into independent parts (e.g. by key), each checked alone. Optional. */
  partition?(history: Operation<I, O>[]): Operation<I, O>[][];
}

export interface CheckOptions {
  /** Give up (result undefined) after this many search steps per partition. Default 10 million. */
  maxSteps?: number;
}

interface Node<I, O> {
  op: Operation<I, O> | undefined;
  id: number;
  isCall: boolean;
  match: Node<I, O> | undefined;
  prev: Node<I, O> | undefined;
  next: Node<I, O> | undefined;
}

/** true: linearizable; false: not; undefined: the step budget ran out first. */
export function checkOperations<S, I, O>(
  model: Model<S, I, O>,
  history: Operation<I, O>[],
  options: CheckOptions = {},
): boolean | undefined {
  const parts = model.partition ? model.partition(history) : [history];
  let result: boolean | undefined = true;
  for (const part of parts) {
    const r = checkSingle(model, part, options.maxSteps ?? 10_000_000);
    if (r === false) return false;
    if (r === undefined) result = undefined;
  }
  return result;
}

function buildList<I, O>(history: Operation<I, O>[]): Node<I, O> {
  const events: { time: number; isCall: boolean; id: number }[] = [];
  history.forEach((op, id) => {
    if (!(op.call < op.return)) {
      throw new RangeError(
        `Operation ${id} returns (${op.return}) before it is called (${op.call})`,
      );
    }
    events.push({ time: op.call, isCall: true, id }, { time: op.return, isCall: false, id });
  });
  // At equal times a return sorts first: the operations did not overlap.
  events.sort((a, b) => a.time - b.time || (a.isCall ? 1 : 0) - (b.isCall ? 1 : 0));
  const head: Node<I, O> = {
    op: undefined,
    id: -1,
    isCall: false,
    match: undefined,
    prev: undefined,
    next: undefined,
  };
  const calls = new Map<number, Node<I, O>>();
  let tail = head;
  for (const e of events) {
    const node: Node<I, O> = {
      op: history[e.id],
      id: e.id,
      isCall: e.isCall,
      match: undefined,
      prev: tail,
      next: undefined,
    };
    if (e.isCall) calls.set(e.id, node);
    else calls.get(e.id)!.match = node;
    tail.next = node;
    tail = node;
  }
  return head;
}

function lift<I, O>(call: Node<I, O>): void {
  call.prev!.next = call.next;
  call.next!.prev = call.prev;
  const ret = call.match!;
  ret.prev!.next = ret.next;
  if (ret.next) ret.next.prev = ret.prev;
}

function unlift<I, O>(call: Node<I, O>): void {
  const ret = call.match!;
  ret.prev!.next = ret;
  if (ret.next) ret.next.prev = ret;
  call.prev!.next = call;
  call.next!.prev = call;
}

function checkSingle<S, I, O>(
  model: Model<S, I, O>,
  history: Operation<I, O>[],
  maxSteps: number,
): boolean | undefined {
  if (history.length === 0) return true;
  const head = buildList(history);
  const linearized = new Uint32Array(Math.ceil(history.length / 32));
  const bitsKey = () => Array.prototype.join.call(linearized, ",");
  const cache = new Set<string>();
  const stack: { call: Node<I, O>; state: S }[] = [];
  let state = model.init();
  let entry = head.next;
  for (let steps = 0; head.next !== undefined; steps++) {
    if (steps > maxSteps) return undefined;
    if (entry === undefined) return false; // cannot happen: the list ends with a return
    if (entry.isCall) {
      const { ok, next } = model.step(state, entry.op!.input, entry.op!.output);
      if (ok) {
        linearized[entry.id >>> 5] |= 1 << (entry.id & 31);
        const key = bitsKey() + "|" + model.key(next);
        if (!cache.has(key)) {
          cache.add(key);
          stack.push({ call: entry, state });
          state = next;
          lift(entry);
          entry = head.next;
          continue;
        }
        linearized[entry.id >>> 5] &= ~(1 << (entry.id & 31));
      }
      entry = entry.next;
    } else {
      // A return whose call is not linearized yet: undo the last choice and try the next one.
      const top = stack.pop();
      if (top === undefined) return false;
      state = top.state;
      linearized[top.call.id >>> 5] &= ~(1 << (top.call.id & 31));
      unlift(top.call);
      entry = top.call.next;
    }
  }
  return true;
}

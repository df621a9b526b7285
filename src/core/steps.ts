/**
 * Runs a generator that yields the results of store calls, synchronously for as long as they
 * are plain values, and asynchronously from the first promise on. The session logic is written
 * once; with a store that answers at once (memory) a request never waits for a microtask.
 */

/** A value now, or a promise of it. */
export type Awaitable<T> = T | PromiseLike<T>;

export type Steps<T> = Generator<unknown, T, unknown>;

/** True for a promise (or thenable): work still running. Synchronous stores answer with plain values. */
export function isPromiseLike<T>(value: T | PromiseLike<T>): value is PromiseLike<T> {
	return typeof (value as PromiseLike<T> | null)?.then === "function";
}

/** Drives `steps`: each yielded value is sent back once settled; a rejection is thrown into the generator. */
export function runSteps<T>(steps: Steps<T>): T | Promise<T> {
	let step = steps.next();
	while (!step.done) {
		if (isPromiseLike(step.value)) return finishAsync(steps, step.value);
		step = steps.next(step.value);
	}
	return step.value;
}

async function finishAsync<T>(steps: Steps<T>, pending: PromiseLike<unknown>): Promise<T> {
	let current: unknown = pending;
	for (;;) {
		let settled: unknown;
		let failed = false;
		try {
			settled = await current;
		} catch (error) {
			failed = true;
			settled = error;
		}
		const step = failed ? steps.throw(settled) : steps.next(settled);
		if (step.done) return step.value;
		current = step.value;
	}
}

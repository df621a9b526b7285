/** The `clock` option of the in-process stores (memory, file, SQLite). */
import { SessionConfigError } from "../../core/errors.js";

/**
 * `clock ?? Date.now`, checked when the store is created: unchecked, a clock that is not a
 * function fails at the first lookup, or in the store's gc or sweep timer, uncaught.
 */
export function checkClock(clock: unknown): () => number {
	const checked = clock ?? Date.now;
	if (typeof checked !== "function") throw new SessionConfigError("clock", "must be a function returning epoch milliseconds.");
	return checked as () => number;
}

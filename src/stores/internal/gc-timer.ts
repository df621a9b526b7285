/** The periodic gc shared by stores whose backend does not expire records by itself. */
import { SessionConfigError } from "../../core/errors.js";
import { describe } from "./describe.js";

// setInterval clamps a longer delay to 1 ms (with only a TimeoutOverflowWarning), which would
// turn a "once a month" gc into a busy loop.
const MAX_INTERVAL_SECONDS = Math.floor(0x7fffffff / 1000);

/**
 * `gcInterval ?? fallback`, checked: a non-negative number of seconds (fractions allowed), at
 * most about 24.8 days. Throws `SessionConfigError` naming `option` otherwise.
 */
export function validateGCInterval(gcInterval: number | undefined, fallback: number, option = "gcInterval"): number {
	const seconds = gcInterval ?? fallback;
	if (typeof seconds !== "number" || !Number.isFinite(seconds) || seconds < 0 || seconds > MAX_INTERVAL_SECONDS) {
		throw new SessionConfigError(
			option,
			`must be a number of seconds from 0 (off) to ${MAX_INTERVAL_SECONDS}, got ${describe(seconds)}.`,
		);
	}
	return seconds;
}

/**
 * Calls `gc` every `seconds` on an unref'd timer, so the timer never keeps the process alive.
 * A run is skipped while the previous one is still going. Returns the function that stops it,
 * which resolves once a run in progress has settled: a store's `close()` waits for it, so that
 * no statement of its gc still runs (on the app's pool, say) after `close()` resolved. `seconds`
 * of 0 starts nothing.
 */
export function startGCTimer(seconds: number, gc: () => Promise<unknown>): () => Promise<void> {
	if (seconds === 0) return () => Promise.resolve();
	let running: Promise<void> | null = null;
	const settled = () => {
		running = null;
	};
	const timer = setInterval(() => {
		if (running) return;
		// A background run has no caller to report to; the next run retries, and a gc() called
		// directly still rejects with the store's error.
		running = gc().then(settled, settled);
	}, seconds * 1000);
	timer.unref();
	return () => {
		clearInterval(timer);
		return running ?? Promise.resolve();
	};
}

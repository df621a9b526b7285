/** The `timeout` option every networked store takes (seconds a call may take), and the file store's `lockTimeout`. */
import { SessionConfigError } from "../../core/errors.js";
import { describe } from "./describe.js";

// setTimeout clamps a longer delay to 1 ms, which would turn a deadline into an instant failure.
const MAX_TIMEOUT_SECONDS = Math.floor(0x7fffffff / 1000);

/** `timeout ?? fallback`, checked: a positive number of seconds. Throws `SessionConfigError` naming `option` otherwise. */
export function checkTimeout(timeout: unknown, fallback: number, option = "timeout"): number {
	const seconds = timeout ?? fallback;
	if (typeof seconds !== "number" || !Number.isFinite(seconds) || seconds <= 0 || seconds > MAX_TIMEOUT_SECONDS) {
		throw new SessionConfigError(option, `must be a number of seconds above 0 and at most ${MAX_TIMEOUT_SECONDS}, got ${describe(seconds)}.`);
	}
	return seconds;
}

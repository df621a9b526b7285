import assert from "node:assert/strict";
import { SessionTooLargeError } from "sessionkit";

/**
 * The node:http and Express apps of the "commit fails, the error handler answers asynchronously"
 * tests: `/stream` writes its body in parts, `/whole` ends it at once, and every session is too
 * large. `errors` is what the error handler heard.
 */
export async function assertCutOffThenAnswered(url: string, errors: unknown[]): Promise<void> {
	const outcome = await fetch(`${url}/stream`).then(async (response) => `${response.status}: ${await response.text()}`, () => "cut off");
	assert.equal(outcome, "cut off", "the later writes do not go out as a 200 without the cookie");
	// A response already ended makes no more calls: the error handler's answer goes out.
	const whole = await fetch(`${url}/whole`);
	assert.equal(whole.status, 500);
	assert.equal(await whole.text(), "failed");
	assert.deepEqual(whole.headers.getSetCookie(), []);
	assert.equal(errors.length, 2);
	assert.ok(errors.every((error) => error instanceof SessionTooLargeError), errors.map(String).join(" | "));
}

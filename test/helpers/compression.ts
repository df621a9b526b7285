import assert from "node:assert/strict";
import compression from "compression";
import compression17 from "compression17";

/**
 * The current compression and 1.7.4 (2019, still widely installed): 1.7.4's write and end write
 * the head whenever `res._header` is unset, where 1.8 asks `res.headersSent`.
 */
export const COMPRESSION_VERSIONS = [
	["1.8", compression],
	["1.7.4", compression17],
] as const;

/**
 * For a route that increments "n" and answers `n=<n>.` in three writes: the first visit gets
 * "n=1." whole with the session cookie, and a second visit with that cookie "n=2.".
 */
export async function assertCountsInPieces(url: string, cookieName: string): Promise<void> {
	const first = await fetch(url);
	assert.equal(first.status, 200);
	assert.equal(await first.text(), "n=1.");
	const cookie = first.headers.getSetCookie()[0]?.split(";")[0] ?? "";
	assert.ok(cookie.startsWith(`${cookieName}=`), "the session cookie was sent");
	assert.equal(await (await fetch(url, { headers: { cookie } })).text(), "n=2.");
}

/**
 * The check shared by the adapter suites for a session middleware used twice on one request (on
 * the app and again on a router or sub-app): the app's middleware records `lastPath`, the inner
 * route `/api/count` answers `{ n, lastPath }` after an increment, and `/data` answers all data.
 */
import assert from "node:assert/strict";

/** One session, one cookie, and both middlewares' changes committed. */
export async function assertOneSessionThroughNestedMiddleware(url: string): Promise<void> {
	const first = await fetch(`${url}/api/count`);
	assert.deepEqual(await first.json(), { n: 1, lastPath: "/api/count" }, "the inner middleware sees what the outer one set");
	const cookies = first.headers.getSetCookie();
	assert.equal(cookies.length, 1, cookies.join(" | "));
	const cookie = cookies[0]!.split(";")[0]!;
	const second = await fetch(`${url}/api/count`, { headers: { cookie } });
	assert.deepEqual(await second.json(), { n: 2, lastPath: "/api/count" });
	assert.deepEqual(second.headers.getSetCookie(), []);
	assert.deepEqual(await (await fetch(`${url}/data`, { headers: { cookie } })).json(), { lastPath: "/data", n: 2 }, "both changes were committed");
}

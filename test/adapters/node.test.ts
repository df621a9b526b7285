import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer, IncomingMessage, type ServerResponse } from "node:http";
import { Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { it } from "node:test";
import { createSessions, SessionNotLoadedError, SessionUsageError } from "sessionkit";
import { getSession, withSessions } from "sessionkit/node";
import { fileStore } from "sessionkit/stores/file";
import { createApp } from "../../examples/node/app.js";
import { adapterConformance, listen } from "../adapter-conformance.js";
import { CookieJar } from "../helpers/cookie-jar.js";

adapterConformance("node:http", async (sessions, { trustProxy }) =>
	listen(createServer(createApp(sessions, { trustProxy, logErrors: false }))),
);

it("node:http: getSession outside withSessions throws SessionNotLoadedError", () => {
	assert.throws(() => getSession(new IncomingMessage(new Socket())), SessionNotLoadedError);
});

// The handler reads the session inside the arguments of `res.end(...)`, so `res.end` is looked up
// before `getSession` runs. With a store that answers asynchronously the commit cannot finish
// inside that call; the response must still go out whole, headers first.
for (const [name, write] of [
	["res.end(String(getSession(req)…))", (req: IncomingMessage, res: ServerResponse) => res.end(String(getSession(req).increment("count")))],
	["res.write(String(getSession(req)…)) then res.end()", (req: IncomingMessage, res: ServerResponse) => {
		res.write(String(getSession(req).increment("count")));
		res.end();
	}],
] as const) {
	it(`node:http: ${name} with an asynchronous store sends the headers first, with the cookie`, async (t) => {
		const dir = await mkdtemp(join(tmpdir(), "sessionkit-node-"));
		const sessions = createSessions({ store: fileStore({ dir }) });
		const server = await listen(createServer(withSessions(sessions, write)));
		t.after(async () => {
			await server.close();
			await sessions.close();
			await rm(dir, { recursive: true, force: true });
		});
		const jar = new CookieJar();
		for (const expected of ["1", "2", "3"]) {
			const response = await fetch(`${server.url}/`, { headers: jar.header() ? { cookie: jar.header()! } : {} });
			assert.equal(response.status, 200);
			assert.equal(await response.text(), expected);
			if (expected === "1") assert.ok(response.headers.getSetCookie().some((line) => line.startsWith(`${sessions.cookieName}=`)), "the new session's cookie is sent");
			jar.update(response);
		}
	});
}

it("node:http: getSession first called after the headers went out throws SessionUsageError", async (t) => {
	const sessions = createSessions();
	let thrown: unknown;
	const server = await listen(
		createServer(
			withSessions(sessions, (req, res) => {
				res.writeHead(200);
				try {
					getSession(req);
				} catch (error) {
					thrown = error;
				}
				res.end("sent");
			}),
		),
	);
	t.after(async () => {
		await server.close();
		await sessions.close();
	});
	const response = await fetch(`${server.url}/`);
	assert.equal(await response.text(), "sent");
	assert.ok(thrown instanceof SessionUsageError, `got ${String(thrown)}`);
});

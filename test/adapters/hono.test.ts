import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { createServer } from "node:http";
import { dirname, resolve } from "node:path";
import { it } from "node:test";
import type { TestContext } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { getRequestListener } from "@hono/node-server";
import { Hono } from "hono";
import type { ErrorHandler } from "hono";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import { stream } from "hono/streaming";
import { createSessions, SessionConfigError, SessionError, SessionNotLoadedError } from "sessionkit";
import type { SessionManager, SessionStore } from "sessionkit";
import { getSession, sessionMiddleware } from "sessionkit/hono";
import { createApp } from "../../examples/hono/app.js";
import { adapterConformance, listen } from "../adapter-conformance.js";
import { setCookiesOf } from "../helpers/cookie-jar.js";
import { assertErrorPageSeesStoreError, assertLogOutOnError, dataOf, errorPageBody, loggedIn } from "../helpers/error-path-app.js";
import { faultyStore, STORE_KINDS, storeOf } from "../helpers/test-stores.js";

adapterConformance("hono", async (sessions, { trustProxy }) =>
	listen(createServer(getRequestListener(createApp(sessions, { trustProxy, logErrors: false }).fetch))),
);

it("hono: adds the cookie to a response whose headers are immutable (a proxied fetch response)", async (t) => {
	const sessions = createSessions();
	const app = new Hono();
	app.use(sessionMiddleware(sessions));
	app.get("/upstream", (c) => c.text("from upstream"));
	app.get("/proxy", (c) => {
		c.get("session").set("user_id", 123);
		return fetch(new URL("/upstream", c.req.url));
	});
	const server = await listen(createServer(getRequestListener(app.fetch)));
	t.after(() => Promise.all([server.close(), sessions.close()]));
	const response = await fetch(`${server.url}/proxy`);
	assert.equal(await response.text(), "from upstream");
	assert.equal(setCookiesOf(response)[0]?.name, "sid");
	assert.equal(response.headers.get("cache-control"), "no-store");
});

it("hono: getSession without the middleware throws SessionNotLoadedError", async () => {
	const app = new Hono();
	let thrown: unknown;
	app.get("/", (c) => {
		try {
			getSession(c);
		} catch (error) {
			thrown = error;
		}
		return c.text("ok");
	});
	await app.request("/");
	assert.ok(thrown instanceof SessionNotLoadedError);
});

it("hono: sessionMiddleware without a session manager fails at setup", () => {
	assert.throws(() => sessionMiddleware(undefined as unknown as SessionManager), SessionConfigError);
});

it("hono: the adapter and the core it loads import no node: module at runtime", () => {
	const seen = new Set<string>();
	const visit = (file: string): void => {
		if (seen.has(file)) return;
		seen.add(file);
		const source = readFileSync(file, "utf8");
		for (const [, specifier] of source.matchAll(/^\s*(?:import|export)\s+(?!type\b)[^;]*?\bfrom\s+"([^"]+)"/gm)) {
			assert.ok(!specifier!.startsWith("node:"), `${file} imports ${specifier}`);
			if (specifier!.startsWith(".")) visit(resolve(dirname(file), specifier!.replace(/\.js$/, ".ts")));
		}
	};
	visit(fileURLToPath(new URL("../../src/adapters/hono.ts", import.meta.url)));
	assert.ok(seen.size > 5, `followed the imports (${seen.size} files)`);
});

it("hono: works on Web Crypto alone, as on Workers (no process.getBuiltinModule)", async () => {
	const script = `
		delete process.getBuiltinModule;
		const { createSessions } = await import("sessionkit");
		const { createApp } = await import(${JSON.stringify(new URL("../../examples/hono/app.ts", import.meta.url).href)});
		const app = createApp(createSessions(), { logErrors: false });
		const set = await app.request("https://example.test/set");
		const cookie = set.headers.getSetCookie()[0].split(";")[0];
		const get = await app.request("https://example.test/get", { headers: { cookie } });
		console.log(JSON.stringify([set.headers.getSetCookie()[0], await get.text()]));
	`;
	const { stdout } = await promisify(execFile)(process.execPath, ["--conditions=sessionkit-source", "--import", "tsx", "--input-type=module", "-e", script]);
	const [setCookie, body] = JSON.parse(stdout) as [string, string];
	assert.match(setCookie, /^sid=[A-Za-z0-9_-]{43}; Path=\/; HttpOnly; Secure; SameSite=Lax$/);
	assert.equal(body, "Authenticated as 123");
});

it("hono: cancels a streamed body that will never be sent when the store cannot save", async (t) => {
	const store = faultyStore();
	const sessions = createSessions({ store });
	const app = new Hono();
	app.use(sessionMiddleware(sessions));
	app.onError((error, c) => c.text(`Error: ${error.message}`, 500));
	let aborted!: () => void;
	const abort = new Promise<string>((resolve) => (aborted = () => resolve("aborted")));
	app.get("/events", (c) => {
		c.get("session").set("user_id", 123);
		return stream(c, async (body) => {
			// What an event stream releases when its client goes: a subscription, a timer.
			body.onAbort(aborted);
			while (!body.aborted) await body.write("event\n");
		});
	});
	const server = await listen(createServer(getRequestListener(app.fetch)));
	t.after(() => Promise.all([server.close(), sessions.close()]));
	store.failing = "writes";
	const response = await fetch(`${server.url}/events`);
	assert.equal(response.status, 500);
	assert.match(await response.text(), /^Error: sessionkit\/faulty: set failed/);
	const timeout = new Promise<string>((resolve) => setTimeout(resolve, 2000, "still running").unref());
	assert.equal(await Promise.race([abort, timeout]), "aborted", "the stream callback hears that its body will not be read");
});

/**
 * Hono on `store`: the session middleware, `onError`, then `/set` (stores `user_id = 123`),
 * `/get` (the session's data as JSON), and `/admin` and `/throw`, which change the session and
 * throw.
 */
async function serve(t: TestContext, store: SessionStore, onError: ErrorHandler): Promise<{ url: string; sessions: SessionManager }> {
	const sessions = createSessions({ store });
	const app = new Hono();
	app.use(sessionMiddleware(sessions));
	app.onError(onError);
	app.get("/set", (c) => {
		c.get("session").set("user_id", 123);
		return c.text("Succeed");
	});
	app.get("/get", (c) => c.text(JSON.stringify(c.get("session").all())));
	app.get("/admin", (c) => {
		c.get("session").set("user_id", 1);
		throw new AuthError("token expired");
	});
	app.get("/throw", (c) => {
		c.get("session").set("user_id", 666);
		throw new Error("boom");
	});
	const server = await listen(createServer(getRequestListener(app.fetch)));
	t.after(() => server.close());
	return { url: server.url, sessions };
}

class AuthError extends Error {}

/** onError logs the user out and answers 401, or with `?status=` when given. */
const logOut: ErrorHandler = (_error, c) => {
	c.get("session").destroy();
	return c.text("logged out", Number(c.req.query("status") ?? 401) as ContentfulStatusCode);
};

for (const kind of STORE_KINDS) {
	it(`hono (${kind} store): commits an onError's destroy() answered with a 401, and nothing when it answers 500`, async (t) => {
		const { url, sessions } = await serve(t, await storeOf(kind, t), logOut);
		await assertLogOutOnError(url, sessions);
	});

	it(`hono (${kind} store): an onError answering below 500 commits the failed handler's changes along with its own`, async (t) => {
		// Hono runs onError before the middleware resumes, so the two cannot be told apart (README).
		const { url } = await serve(t, await storeOf(kind, t), (_error, c) => {
			c.get("session").set("note", "denied");
			return c.text("denied", 403);
		});
		const cookie = await loggedIn(url);
		const denied = await fetch(`${url}/throw`, { headers: { cookie } });
		assert.equal(denied.status, 403);
		assert.deepEqual(await dataOf(url, cookie), { user_id: 666, note: "denied" });
	});
}

it("hono: a store failing during the error path's commit reaches onError again, which answers 500, without crashing", async (t) => {
	const rejections: unknown[] = [];
	const onRejection = (reason: unknown) => void rejections.push(reason);
	process.on("unhandledRejection", onRejection);
	t.after(() => void process.off("unhandledRejection", onRejection));
	const store = faultyStore();
	const seen: unknown[] = [];
	const { url } = await serve(t, store, (error, c) => {
		seen.push(error);
		if (error instanceof SessionError) return c.text(`Error: ${error.code}`, 500);
		c.get("session").destroy();
		return c.text("logged out", 401);
	});
	const cookie = await loggedIn(url);
	store.failing = "writes";
	const response = await fetch(`${url}/admin`, { headers: { cookie } });
	assert.equal(response.status, 500);
	assert.equal(await response.text(), "Error: SESSION_STORE");
	assert.deepEqual(setCookiesOf(response), []);
	assert.equal(seen.length, 2, "onError heard of the handler's error, then of the store's");

	store.failing = "none";
	assert.deepEqual(await dataOf(url, cookie), { user_id: 123 }, "the server still answers, and the session was not destroyed");
	assert.deepEqual(rejections, []);
});

it("hono: a Response object the handler returns for every request carries no user's cookie to the next", async (t) => {
	const sessions = createSessions();
	const app = new Hono();
	app.use(sessionMiddleware(sessions));
	const noContent = new Response(null, { status: 204 }); // one answer for every request, made once
	app.post("/login", (c) => {
		c.get("session").set("user", c.req.query("user") ?? "");
		return noContent;
	});
	app.get("/me", (c) => c.text(String(c.get("session").get("user"))));
	app.get("/ping", () => noContent);
	const server = await listen(createServer(getRequestListener(app.fetch)));
	t.after(() => Promise.all([server.close(), sessions.close()]));
	const alice = await fetch(`${server.url}/login?user=alice`, { method: "POST" });
	const bob = await fetch(`${server.url}/login?user=bob`, { method: "POST" });
	assert.equal(bob.status, 204);
	const bobCookies = setCookiesOf(bob);
	assert.equal(bobCookies.length, 1, bob.headers.getSetCookie().join(" | "));
	assert.notEqual(bobCookies[0]!.value, setCookiesOf(alice)[0]!.value);
	const me = await fetch(`${server.url}/me`, { headers: { cookie: `sid=${bobCookies[0]!.value}` } });
	assert.equal(await me.text(), "bob");
	const ping = await fetch(`${server.url}/ping`);
	assert.equal(ping.status, 204);
	assert.deepEqual(ping.headers.getSetCookie(), [], "a request that sets no cookie gets none of an earlier one");
});

it("hono: an error page that reads the session when the store cannot load it gets the store's error, not a TypeError", async (t) => {
	const store = faultyStore();
	const { url } = await serve(t, store, (_error, c) => c.text(errorPageBody(() => c.get("session").get("user_id")), 500));
	await assertErrorPageSeesStoreError(url, store);
});

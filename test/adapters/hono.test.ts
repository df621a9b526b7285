import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { createServer } from "node:http";
import type { Server } from "node:http";
import { connect as connectHttp2, createSecureServer as createSecureHttp2Server } from "node:http2";
import { createServer as createHttpsServer } from "node:https";
import type { AddressInfo } from "node:net";
import { dirname, resolve } from "node:path";
import { describe, it } from "node:test";
import type { TestContext } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { getRequestListener } from "@hono/node-server";
import type { HttpBindings } from "@hono/node-server";
import { Hono } from "hono";
import type { ErrorHandler } from "hono";
import { mount } from "hono/mount";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import { stream } from "hono/streaming";
import { createSessions, SessionConfigError, SessionError, SessionNotLoadedError } from "sessionkit";
import type { SessionManager, SessionStore } from "sessionkit";
import { getSession, sessionMiddleware } from "sessionkit/hono";
import { createApp } from "../../examples/hono/app.js";
import { adapterConformance, listen } from "../adapter-conformance.js";
import { setCookiesOf } from "../helpers/cookie-jar.js";
import { assertOneSessionThroughNestedMiddleware } from "../helpers/nested-middleware.js";
import { assertErrorPageSeesStoreError, assertLogOutOnError, dataOf, errorPageBody, loggedIn } from "../helpers/error-path-app.js";
import { faultyStore, STORE_KINDS, storeOf } from "../helpers/test-stores.js";
import { assertLateChangeRefused, lateChange } from "../helpers/late-change.js";
import { hasOpenSSL, rawRequest, selfSignedCert } from "../helpers/raw-http.js";

/**
 * An app with `site`'s sessionMiddleware (`?visit` sets "visited" in its session) and a sub-app,
 * `panel`, with `admin`'s own: two managers on one request, for the caller to mount and route.
 */
function siteWithAdminPanel(site: SessionManager, admin: SessionManager): { app: Hono; panel: Hono } {
	const app = new Hono();
	app.use(sessionMiddleware(site));
	app.use(async (c, next) => {
		if (c.req.query("visit") !== undefined) c.get("session").set("visited", true);
		await next();
	});
	const panel = new Hono();
	panel.use(sessionMiddleware(admin));
	return { app, panel };
}

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

/**
 * An app whose routes answer with one Response object made once: POST `/login?user=` stores the
 * user and returns it, `/ping` returns it too, `/me` answers the session's user.
 */
async function serveSharedResponse(t: TestContext, sessions: SessionManager): Promise<{ url: string }> {
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
	return server;
}

it("hono: a Response object the handler returns for every request carries no user's cookie to the next", async (t) => {
	const sessions = createSessions();
	const server = await serveSharedResponse(t, sessions);
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

for (const kind of STORE_KINDS) {
	it(`hono (${kind} store): sessionMiddleware on the app and again on a sub-app (app.route) keeps one session, with the changes made in between, and sends one cookie`, async (t) => {
		const sessions = createSessions({ store: await storeOf(kind, t) });
		const app = new Hono();
		app.use(sessionMiddleware(sessions));
		// An app-wide middleware that records something in the session.
		app.use(async (c, next) => {
			c.get("session").set("lastPath", c.req.path);
			await next();
		});
		const api = new Hono();
		api.use(sessionMiddleware(sessions));
		api.get("/count", (c) => c.json({ n: c.get("session").increment("n"), lastPath: c.get("session").get("lastPath") }));
		app.route("/api", api);
		app.get("/data", (c) => c.json(c.get("session").all()));
		const server = await listen(createServer(getRequestListener(app.fetch)));
		t.after(() => Promise.all([server.close(), sessions.close()]));
		await assertOneSessionThroughNestedMiddleware(server.url);
	});

	for (const how of ["app.route", "mount"] as const) {
		it(`hono (${kind} store): a sub-app with another manager's sessionMiddleware (${how}) keeps its cookie beside the app's`, async (t) => {
			const site = createSessions({ store: await storeOf(kind, t) });
			const admin = createSessions({ store: await storeOf(kind, t), cookie: { name: "admin_sid" } });
			const { app, panel } = siteWithAdminPanel(site, admin);
			panel.get("/login", (c) => {
				c.get("session").set("admin", true);
				return c.text("admin");
			});
			if (how === "app.route") app.route("/admin", panel);
			else app.all("/admin/*", mount(panel.fetch)); // hono/mount: a Context of its own

			const server = await listen(createServer(getRequestListener(app.fetch)));
			t.after(() => Promise.all([server.close(), site.close(), admin.close()]));
			for (const [path, names] of [["/admin/login", ["admin_sid"]], ["/admin/login?visit", ["admin_sid", "sid"]]] as const) {
				const reply = await fetch(`${server.url}${path}`);
				assert.equal(await reply.text(), "admin");
				const cookies = reply.headers.getSetCookie().map((line) => line.split(";")[0]!);
				assert.deepEqual(cookies.map((cookie) => cookie.split("=")[0]).sort(), names, `${path}: ${cookies.join(" | ")}`);
				const adminSid = cookies.find((cookie) => cookie.startsWith("admin_sid="))!;
				assert.deepEqual((await admin.load(adminSid)).all(), { admin: true }, "the sub-app's session was committed");
				const sid = cookies.find((cookie) => cookie.startsWith("sid="));
				if (sid !== undefined) assert.deepEqual((await site.load(sid)).all(), { visited: true }, "the app's session was committed");
			}
		});
	}
}

it("hono: a Response object returned for every request through two managers' middlewares carries no user's cookies to the next", async (t) => {
	const site = createSessions();
	const admin = createSessions({ cookie: { name: "admin_sid" } });
	const { app, panel } = siteWithAdminPanel(site, admin);
	const noContent = new Response(null, { status: 204 }); // one answer for every request, made once
	panel.post("/login", (c) => {
		const user = c.req.query("user");
		if (user !== undefined) c.get("session").set("user", user);
		return noContent;
	});
	app.route("/admin", panel);
	const server = await listen(createServer(getRequestListener(app.fetch)));
	t.after(() => Promise.all([server.close(), site.close(), admin.close()]));
	const names = async (query: string) => {
		const reply = await fetch(`${server.url}/admin/login?${query}`, { method: "POST" });
		assert.equal(reply.status, 204);
		return reply.headers.getSetCookie().map((line) => line.split("=")[0]).sort();
	};
	assert.deepEqual(await names("user=alice&visit"), ["admin_sid", "sid"]);
	assert.deepEqual(await names("user=bob"), ["admin_sid"], "none of alice's cookies");
	assert.deepEqual(await names(""), []);
	assert.deepEqual(await names("visit"), ["sid"]);
});

it("hono: a Set-Cookie put on the Node response (c.env.outgoing) is kept beside the session cookie, and goes to no other request", async (t) => {
	const sessions = createSessions();
	const app = new Hono<{ Bindings: HttpBindings }>();
	app.use(sessionMiddleware(sessions));
	const noContent = new Response(null, { status: 204 }); // one answer for every request, made once
	app.get("/login", (c) => {
		// As a Node library given the raw response does.
		c.env.outgoing.setHeader("Set-Cookie", ["consent=yes", "ab=b"]);
		c.get("session").set("user", "alice");
		return c.req.query("shared") === undefined ? c.text("in") : noContent;
	});
	app.get("/ping", () => noContent);
	const server = await listen(createServer(getRequestListener(app.fetch)));
	t.after(() => Promise.all([server.close(), sessions.close()]));
	for (const method of ["GET", "HEAD"]) {
		for (const path of ["/login", "/login?shared"]) {
			const reply = await fetch(`${server.url}${path}`, { method });
			const cookies = reply.headers.getSetCookie().map((line) => line.split(";")[0]!.split("=")[0]);
			assert.deepEqual(cookies, ["consent", "ab", "sid"], `${method} ${path}`);
		}
	}
	const ping = await fetch(`${server.url}/ping`);
	assert.deepEqual(ping.headers.getSetCookie(), [], "the shared Response carries none of them to the next request");
});

it("hono: a Response object returned for every request, to requests whose commits wait for the store in parallel, carries each one its own cookie only", async (t) => {
	const sessions = createSessions({ store: await storeOf("file", t) });
	const server = await serveSharedResponse(t, sessions);
	for (let round = 0; round < 5; round++) {
		const users = [`alice${round}`, `bob${round}`, `carol${round}`];
		const replies = await Promise.all(users.map((user) => fetch(`${server.url}/login?user=${user}`, { method: "POST" })));
		for (const [i, reply] of replies.entries()) {
			const cookies = setCookiesOf(reply);
			assert.equal(cookies.length, 1, `round ${round}, ${users[i]}: ${reply.headers.getSetCookie().join(" | ")}`);
			const me = await fetch(`${server.url}/me`, { headers: { cookie: `sid=${cookies[0]!.value}` } });
			assert.equal(await me.text(), users[i]);
		}
		assert.deepEqual((await fetch(`${server.url}/ping`)).headers.getSetCookie(), [], `round ${round}: nobody's cookie`);
	}
});

// A Content-Type does not make a Response without a body any less shareable.
for (const [what, init] of [
	["", { status: 204 }],
	[" (a 204 with a Content-Type)", { status: 204, headers: { "Content-Type": "text/plain" } }],
] as const) {
	it(`hono: a Response object returned for every request is not given a cookie while an earlier request that returned it is still on its way out${what}`, async (t) => {
		const sessions = createSessions();
		const app = new Hono();
		let logged!: () => void;
		const logging = new Promise<void>((resolve) => (logged = resolve));
		// e.g. an access log that awaits its write after next(): here, until the login has answered
		app.use(async (c, next) => {
			await next();
			if (c.req.path === "/ping") await logging;
		});
		app.use(sessionMiddleware(sessions));
		const noContent = new Response(null, init); // one answer for every request, made once
		app.post("/login", (c) => {
			c.get("session").set("user", "alice");
			return noContent;
		});
		app.get("/ping", () => noContent);
		const server = await listen(createServer(getRequestListener(app.fetch)));
		t.after(() => Promise.all([server.close(), sessions.close()]));
		const ping = fetch(`${server.url}/ping`);
		await new Promise((resolve) => setTimeout(resolve, 50)); // /ping has returned noContent, and waits
		const login = await fetch(`${server.url}/login`, { method: "POST" });
		assert.equal(setCookiesOf(login).length, 1);
		logged();
		assert.deepEqual((await ping).headers.getSetCookie(), [], "the anonymous request does not get alice's cookie");
	});
}

it("hono: with etag() registered after sessionMiddleware, a 304 still carries the session cookie", async (t) => {
	const { etag } = await import("hono/etag");
	const sessions = createSessions();
	const app = new Hono();
	app.use(sessionMiddleware(sessions));
	app.use(etag());
	app.get("/page", (c) => {
		if (c.req.query("visit") !== undefined) c.get("session").increment("visits");
		return c.text("the same page");
	});
	app.get("/visits", (c) => c.text(String(c.get("session").get("visits"))));
	const server = await listen(createServer(getRequestListener(app.fetch)));
	t.after(() => Promise.all([server.close(), sessions.close()]));
	const first = await fetch(`${server.url}/page`);
	const tag = first.headers.get("etag");
	assert.ok(tag, "etag() tagged the page");
	const revalidated = await fetch(`${server.url}/page?visit`, { headers: { "If-None-Match": tag } });
	assert.equal(revalidated.status, 304);
	const [cookie] = setCookiesOf(revalidated);
	assert.equal(cookie?.name, "sid");
	const next = await fetch(`${server.url}/page?visit`, { headers: { Cookie: `sid=${cookie!.value}`, "If-None-Match": tag } });
	assert.equal(next.status, 304);
	const visits = await fetch(`${server.url}/visits`, { headers: { Cookie: `sid=${cookie!.value}` } });
	assert.equal(await visits.text(), "2", "both revalidated requests were committed");
});

for (const kind of STORE_KINDS) {
	it(`hono (${kind} store): a handler that hono/timeout answered with a 408 (no cookie) has its changes dropped, not committed once it finishes`, async (t) => {
		const { HTTPException } = await import("hono/http-exception");
		const { timeout } = await import("hono/timeout");
		const sessions = createSessions({ store: await storeOf(kind, t) });
		const app = new Hono();
		// Hono's documented custom timeout answer: a 408, which is below 500.
		app.use(timeout(100, new HTTPException(408, { message: "Request timeout" })));
		let finished!: () => void;
		const slowDone = new Promise<void>((resolve) => (finished = resolve));
		app.use(async (c, next) => {
			await next();
			if (c.req.path === "/slow") finished(); // the session middleware below has resumed
		});
		app.use(sessionMiddleware(sessions));
		app.get("/set", (c) => {
			c.get("session").set("user", "alice");
			return c.text("in");
		});
		app.get("/get", (c) => c.text(JSON.stringify(c.get("session").all())));
		app.get("/slow", async (c) => {
			await new Promise((resolve) => setTimeout(resolve, 300));
			c.get("session").set("sudo", true);
			c.get("session").renew();
			return c.text("sudo");
		});
		const server = await listen(createServer(getRequestListener(app.fetch)));
		t.after(() => Promise.all([server.close(), sessions.close()]));
		const cookie = (await fetch(`${server.url}/set`)).headers.getSetCookie()[0]!.split(";")[0]!;
		const slow = await fetch(`${server.url}/slow`, { headers: { cookie } });
		assert.equal(slow.status, 408);
		assert.deepEqual(slow.headers.getSetCookie(), []);
		await slowDone;
		const get = await fetch(`${server.url}/get`, { headers: { cookie } });
		assert.equal(await get.text(), JSON.stringify({ user: "alice" }), "the browser's cookie still holds its session: the renew was not committed");
	});
}

for (const kind of STORE_KINDS) {
	it(`hono (${kind} store): a middleware of the app finds the app's session again after next() returns from a sub-app with another manager's sessionMiddleware`, async (t) => {
		const site = createSessions({ store: await storeOf(kind, t) });
		const admin = createSessions({ store: await storeOf(kind, t), cookie: { name: "admin_sid" } });
		const { app, panel } = siteWithAdminPanel(site, admin);
		// e.g. an app-wide "last page seen" record, written once the route has answered
		app.use(async (c, next) => {
			await next();
			c.get("session").set("lastPath", c.req.path);
		});
		panel.get("/login", (c) => {
			c.get("session").set("admin", true);
			return c.text("admin");
		});
		app.route("/admin", panel);
		const server = await listen(createServer(getRequestListener(app.fetch)));
		t.after(() => Promise.all([server.close(), site.close(), admin.close()]));
		const reply = await fetch(`${server.url}/admin/login`);
		assert.equal(reply.status, 200);
		assert.equal(await reply.text(), "admin");
		const cookies = reply.headers.getSetCookie().map((line) => line.split(";")[0]!);
		assert.deepEqual(cookies.map((cookie) => cookie.split("=")[0]).sort(), ["admin_sid", "sid"], cookies.join(" | "));
		assert.deepEqual((await site.load(cookies.find((cookie) => cookie.startsWith("sid="))!)).all(), { lastPath: "/admin/login" });
		assert.deepEqual((await admin.load(cookies.find((cookie) => cookie.startsWith("admin_sid="))!)).all(), { admin: true });
	});
}

// A module-level Response is made before the server starts: a native one, even where
// @hono/node-server then puts its lightweight Response in the global's place.
const NativeResponse: typeof Response = Object.getPrototypeOf(Response) === Function.prototype ? Response : Object.getPrototypeOf(Response);

it("hono: a bodyless 200 Response with a Content-Type returned for every request carries no cookie to a route without sessions", async (t) => {
	const sessions = createSessions();
	const app = new Hono();
	app.use("/app/*", sessionMiddleware(sessions));
	const ok = new NativeResponse(null, { headers: { "content-type": "text/plain" } }); // one answer for every request, made once
	app.post("/app/login", (c) => {
		c.get("session").set("user", c.req.query("user") ?? "");
		return ok;
	});
	app.get("/app/me", (c) => c.text(String(c.get("session").get("user"))));
	app.get("/health", () => ok);
	const server = await listen(createServer(getRequestListener(app.fetch)));
	t.after(() => Promise.all([server.close(), sessions.close()]));
	const alice = await fetch(`${server.url}/app/login?user=alice`, { method: "POST" });
	assert.equal(alice.status, 200);
	const aliceCookie = setCookiesOf(alice)[0];
	assert.ok(aliceCookie, "the login sets the cookie");
	assert.equal(await (await fetch(`${server.url}/app/me`, { headers: { cookie: `sid=${aliceCookie.value}` } })).text(), "alice");
	const health = await fetch(`${server.url}/health`);
	assert.equal(health.status, 200);
	assert.deepEqual(health.headers.getSetCookie(), [], "alice's cookie is not handed to anyone who asks");
	assert.equal(health.headers.get("cache-control"), null);
});

describe("hono: Secure follows the connection, not the scheme a request line in absolute form names", { skip: hasOpenSSL ? false : "openssl is not installed" }, () => {
	/** `/set` stores a value, so that the answer sets the cookie; `secure: "auto"` (the default). */
	async function serveOver(t: TestContext, tls: { key: Buffer; cert: Buffer } | undefined, trustProxy = false): Promise<number> {
		const sessions = createSessions();
		const app = new Hono();
		app.use(sessionMiddleware(sessions, { trustProxy }));
		app.get("/set", (c) => {
			c.get("session").set("user_id", 123);
			return c.text("Succeed");
		});
		const listener = getRequestListener(app.fetch);
		const server = tls === undefined ? createServer(listener) : createHttpsServer(tls, listener);
		const { url, close } = await listen(server as Server);
		t.after(() => Promise.all([close(), sessions.close()]));
		return Number(new URL(url).port);
	}

	const secureOf = (cookie: string | undefined) => cookie !== undefined && /;\s*Secure(;|$)/i.test(cookie);

	it("plain HTTP: a client that writes `GET https://…` gets no Secure cookie", async (t) => {
		const port = await serveOver(t, undefined);
		const reply = await rawRequest(port, `GET https://127.0.0.1:${port}/set HTTP/1.1\r\nHost: 127.0.0.1:${port}`);
		assert.equal(reply.status, 200);
		assert.equal(reply.setCookies.length, 1);
		assert.equal(secureOf(reply.setCookies[0]), false, reply.setCookies[0]);
	});

	it("TLS: a client that writes `GET http://…` still gets a Secure cookie", async (t) => {
		const tls = selfSignedCert();
		const port = await serveOver(t, tls);
		for (const target of [`http://127.0.0.1:${port}/set`, "/set"]) {
			const reply = await rawRequest(port, `GET ${target} HTTP/1.1\r\nHost: 127.0.0.1:${port}`, tls.cert);
			assert.equal(reply.status, 200);
			assert.equal(secureOf(reply.setCookies[0]), true, `${target}: ${reply.setCookies[0]}`);
		}
	});

	it("HTTP/2 over TLS: a Secure cookie", async (t) => {
		const tls = selfSignedCert();
		const sessions = createSessions();
		const app = new Hono();
		app.use(sessionMiddleware(sessions));
		app.get("/set", (c) => {
			c.get("session").set("user_id", 123);
			return c.text("Succeed");
		});
		const server = createSecureHttp2Server(tls, getRequestListener(app.fetch));
		await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
		const client = connectHttp2(`https://127.0.0.1:${(server.address() as AddressInfo).port}`, { ca: tls.cert });
		t.after(async () => {
			client.close();
			await Promise.all([new Promise((resolve) => server.close(resolve)), sessions.close()]);
		});
		const cookies = await new Promise<string[]>((resolve, reject) => {
			const stream = client.request({ ":path": "/set" });
			stream.on("response", (headers) => resolve((headers["set-cookie"] ?? []) as string[]));
			stream.on("error", reject);
			stream.resume();
			stream.end();
		});
		assert.equal(cookies.length, 1);
		assert.equal(secureOf(cookies[0]), true, cookies[0]);
	});

	it("trustProxy: X-Forwarded-Proto decides, whatever scheme the request line names", async (t) => {
		const port = await serveOver(t, undefined, true);
		const host = `Host: 127.0.0.1:${port}`;
		const forwarded = await rawRequest(port, `GET http://127.0.0.1:${port}/set HTTP/1.1\r\n${host}\r\nX-Forwarded-Proto: https`);
		assert.equal(secureOf(forwarded.setCookies[0]), true, forwarded.setCookies[0]);
		const plain = await rawRequest(port, `GET https://127.0.0.1:${port}/set HTTP/1.1\r\n${host}\r\nX-Forwarded-Proto: http`);
		assert.equal(secureOf(plain.setCookies[0]), false, plain.setCookies[0]);
	});
});

for (const kind of STORE_KINDS) {
	it(`hono (${kind} store): a change made above the session middleware after next() throws SessionUsageError after a 5xx answer too, not only after a commit`, async (t) => {
		const sessions = createSessions({ store: await storeOf(kind, t) });
		const late = lateChange();
		const app = new Hono();
		app.use(async (c, next) => {
			await next();
			late.attempt(c.get("session"));
		});
		app.use(sessionMiddleware(sessions));
		app.get("/answer", (c) => {
			c.get("session").set("user", "alice");
			return c.text("answered", Number(c.req.query("status")) as ContentfulStatusCode);
		});
		const server = await listen(createServer(getRequestListener(app.fetch)));
		t.after(() => Promise.all([server.close(), sessions.close()]));
		await assertLateChangeRefused(server.url, late);
	});
}

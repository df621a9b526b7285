import assert from "node:assert/strict";
import { createReadStream } from "node:fs";
import { createServer } from "node:http";
import { Readable } from "node:stream";
import { it } from "node:test";
import type { TestContext } from "node:test";
import Koa from "koa";
import type { Middleware } from "koa";
import { createSessions, SessionConfigError, SessionNotLoadedError, SessionStoreError, SessionTooLargeError, SessionUsageError } from "sessionkit";
import type { SessionManager, SessionOptions, SessionStore } from "sessionkit";
import { getSession, sessionMiddleware } from "sessionkit/koa";
import { createApp } from "../../examples/koa/app.js";
import { adapterConformance, listen } from "../adapter-conformance.js";
import { setCookiesOf } from "../helpers/cookie-jar.js";
import { assertErrorPageSeesStoreError, assertExpiresSession, assertLogOutOnError, dataOf, errorPageBody, loggedIn } from "../helpers/error-path-app.js";
import { faultyStore, STORE_KINDS, storeOf } from "../helpers/test-stores.js";
import { assertLateChangeRefused, lateChange } from "../helpers/late-change.js";

adapterConformance("koa", async (sessions, { trustProxy }) =>
	listen(createServer(createApp(sessions, { trustProxy, logErrors: false }).callback())),
);

it("koa: getSession without the middleware throws SessionNotLoadedError", async (t) => {
	const app = new Koa();
	let thrown: unknown;
	app.use((ctx) => {
		try {
			getSession(ctx);
		} catch (error) {
			thrown = error;
		}
		ctx.body = "ok";
	});
	const server = await listen(createServer(app.callback()));
	t.after(() => server.close());
	await (await fetch(server.url)).text();
	assert.ok(thrown instanceof SessionNotLoadedError);
});

it("koa: sessionMiddleware without a session manager fails at setup", () => {
	assert.throws(() => sessionMiddleware(undefined as unknown as SessionManager), SessionConfigError);
});

it("koa: reports through app.on(\"error\") a session cookie that came after the headers were sent", async (t) => {
	const sessions = createSessions();
	const app = new Koa();
	const reported = new Promise<unknown>((resolve) => app.on("error", resolve));
	app.use(sessionMiddleware(sessions));
	app.use((ctx) => {
		ctx.session.set("user_id", 123);
		ctx.respond = false;
		ctx.res.end("raw");
	});
	const server = await listen(createServer(app.callback()));
	t.after(() => Promise.all([server.close(), sessions.close()]));
	const response = await fetch(server.url);
	assert.equal(await response.text(), "raw");
	assert.ok((await reported) instanceof SessionUsageError);
});

it("koa: cancels a web stream body that will never be sent when the store cannot save", async (t) => {
	const store = faultyStore();
	const sessions = createSessions({ store });
	const app = new Koa();
	app.on("error", () => {});
	app.use(sessionMiddleware(sessions));
	const cancelled: string[] = [];
	/** A body that never ends on its own, as an event stream or a proxied upstream body. */
	const endless = (name: string) => new ReadableStream({ pull: (controller) => controller.enqueue(new Uint8Array(8)), cancel: () => void cancelled.push(name) });
	app.use((ctx) => {
		ctx.session.set("user_id", 123);
		ctx.body = ctx.path === "/response" ? new Response(endless("response")) : endless("stream");
	});
	const server = await listen(createServer(app.callback()));
	t.after(() => Promise.all([server.close(), sessions.close()]));
	store.failing = "writes";
	for (const path of ["/stream", "/response"]) {
		const response = await fetch(server.url + path);
		assert.equal(response.status, 500);
		assert.equal(response.headers.getSetCookie().length, 0);
		await response.text();
	}
	assert.deepEqual(cancelled, ["stream", "response"], "each body that will never be sent is cancelled");
});

interface KoaServer {
	url: string;
	sessions: SessionManager;
	/** What reached `app.on("error")`. */
	errors: unknown[];
}

/**
 * Koa on `store`: `upstream` (error handling above the session middleware, if any), the session
 * middleware, then `/set` (stores `user_id = 123`), `/get` (the session's data as JSON) and `routes`.
 */
async function serve(t: TestContext, store: SessionStore, upstream: Middleware | null, routes: Record<string, Middleware>, options: SessionOptions = {}): Promise<KoaServer> {
	const sessions = createSessions({ ...options, store });
	const app = new Koa();
	const errors: unknown[] = [];
	app.on("error", (error: unknown) => void errors.push(error));
	if (upstream !== null) app.use(upstream);
	app.use(sessionMiddleware(sessions));
	app.use(async (ctx, next) => {
		if (ctx.path === "/set") {
			ctx.session.set("user_id", 123);
			ctx.body = "Succeed";
		} else if (ctx.path === "/get") {
			ctx.body = JSON.stringify(ctx.session.all());
		} else {
			await routes[ctx.path]?.(ctx, next);
		}
	});
	const server = await listen(createServer(app.callback()));
	t.after(() => server.close());
	return { url: server.url, sessions, errors };
}

/** Collects unhandled rejections while the test runs. */
function unhandledRejections(t: TestContext): unknown[] {
	const seen: unknown[] = [];
	const listener = (reason: unknown) => void seen.push(reason);
	process.on("unhandledRejection", listener);
	t.after(() => void process.off("unhandledRejection", listener));
	return seen;
}

class AuthError extends Error {
	readonly status = 401;
}

/** An upstream error handler: it logs the user out and answers 401, or with `?status=` when given. */
const logOutOnError: Middleware = async (ctx, next) => {
	try {
		await next();
	} catch {
		ctx.session.destroy();
		ctx.status = Number(ctx.query.status ?? 401);
		ctx.body = "logged out";
	}
};

/** An error handler that notes the denial in the session and answers 403. */
const denyOnError: Middleware = async (ctx, next) => {
	try {
		await next();
	} catch {
		ctx.session.set("note", "denied");
		ctx.status = 403;
		ctx.body = "denied";
	}
};

for (const kind of STORE_KINDS) {
	it(`koa (${kind} store): commits an upstream error handler's destroy() answered with a 401, and nothing when it answers 500`, async (t) => {
		const { url, sessions } = await serve(t, await storeOf(kind, t), logOutOnError, {
			"/admin": (ctx) => {
				ctx.session.set("user_id", 1);
				throw new AuthError("token expired");
			},
		});
		await assertLogOutOnError(url, sessions);
	});

	it(`koa (${kind} store): drops the changes of a handler that throws, and commits those of the error handler that answers it with a 4xx`, async (t) => {
		const { url } = await serve(
			t,
			await storeOf(kind, t),
			denyOnError,
			{
				"/throw": (ctx) => {
					ctx.session.set("user_id", 666);
					ctx.session.set("admin", true);
					throw new Error("boom");
				},
			},
		);
		const fresh = await fetch(`${url}/throw`);
		assert.equal(fresh.status, 403);
		assert.equal(fresh.headers.get("cache-control"), "no-store");
		const created = fresh.headers.getSetCookie()[0]?.split(";")[0];
		assert.ok(created, "the error handler's change to a new session is committed");
		assert.deepEqual(await dataOf(url, created), { note: "denied" }, "the failed handler's changes are not");

		const cookie = await loggedIn(url);
		assert.equal((await fetch(`${url}/throw`, { headers: { cookie } })).status, 403);
		assert.deepEqual(await dataOf(url, cookie), { user_id: 123, note: "denied" });
	});

	it(`koa (${kind} store): an error rethrown to Koa's own error handler commits the changes made on the way up when Koa answers below 500`, async (t) => {
		const { url, sessions, errors } = await serve(
			t,
			await storeOf(kind, t),
			async (ctx, next) => {
				try {
					await next();
				} catch (error) {
					if (ctx.path === "/admin" || ctx.path === "/crash") ctx.session.destroy();
					throw error;
				}
			},
			{
				"/forbidden": (ctx) => {
					ctx.session.set("user_id", 403);
					ctx.throw(403, "Forbidden");
				},
				"/crash": (ctx) => {
					ctx.session.set("user_id", 500);
					throw new Error("boom");
				},
				"/admin": (ctx) => {
					ctx.session.set("user_id", 1);
					ctx.throw(401, "token expired");
				},
			},
		);
		const cookie = await loggedIn(url);

		const forbidden = await fetch(`${url}/forbidden`, { headers: { cookie } });
		assert.equal(forbidden.status, 403);
		assert.equal(await forbidden.text(), "Forbidden");
		assert.deepEqual(setCookiesOf(forbidden), []);
		assert.deepEqual(await dataOf(url, cookie), { user_id: 123 }, "the handler's change is dropped");

		const crash = await fetch(`${url}/crash`, { headers: { cookie } });
		assert.equal(crash.status, 500);
		assert.deepEqual(setCookiesOf(crash), []);
		assert.deepEqual(await dataOf(url, cookie), { user_id: 123 }, "nothing is committed for Koa's 500");

		const denied = await fetch(`${url}/admin`, { headers: { cookie } });
		assert.equal(denied.status, 401);
		assert.equal(await denied.text(), "token expired");
		assertExpiresSession(denied);
		assert.equal(await sessions.count(), 0);
		assert.equal(errors.length, 3, "Koa reported each error");
	});

	it(`koa (${kind} store): a session too large to commit on the error path answers 500 through Koa's error handling`, async (t) => {
		const rejections = unhandledRejections(t);
		const { url, errors } = await serve(
			t,
			await storeOf(kind, t),
			async (ctx, next) => {
				try {
					await next();
				} catch {
					ctx.session.set("note", "x".repeat(1000));
					ctx.status = 400;
					ctx.body = "bad request";
				}
			},
			{
				"/throw": () => {
					throw new Error("boom");
				},
			},
			{ maxSize: 256 },
		);
		const cookie = await loggedIn(url);
		const response = await fetch(`${url}/throw`, { headers: { cookie } });
		assert.equal(response.status, 500);
		assert.equal(await response.text(), "Internal Server Error");
		assert.deepEqual(setCookiesOf(response), []);
		assert.ok(errors.some((error) => error instanceof SessionTooLargeError), "app.on(\"error\") hears of the failed commit");
		assert.deepEqual(await dataOf(url, cookie), { user_id: 123 });
		assert.deepEqual(rejections, []);
	});
}

it("koa: a store failing during the error path's commit answers 500, or closes the connection of a streamed answer, without crashing", async (t) => {
	const rejections = unhandledRejections(t);
	const store = faultyStore();
	const streamed: Readable[] = [];
	let cancelled = false;
	const { url, errors } = await serve(
		t,
		store,
		async (ctx, next) => {
			try {
				await next();
			} catch {
				ctx.session.destroy();
				ctx.status = 401;
				if (ctx.path === "/stream") {
					const body = Readable.from(["logged ", "out"]);
					streamed.push(body);
					ctx.body = body;
				} else if (ctx.path === "/events") {
					// Endless, as an event stream: only a cancel stops it.
					ctx.body = new ReadableStream({ pull: (controller) => controller.enqueue(new Uint8Array(8)), cancel: () => void (cancelled = true) });
				} else {
					ctx.body = "logged out";
				}
			}
		},
		Object.fromEntries(
			["/admin", "/stream", "/events"].map((path): [string, Middleware] => [
				path,
				() => {
					throw new AuthError("token expired");
				},
			]),
		),
	);
	const cookie = await loggedIn(url);
	store.failing = "writes";

	const response = await fetch(`${url}/admin`, { headers: { cookie } });
	assert.equal(response.status, 500);
	assert.equal(await response.text(), "Internal Server Error");
	assert.deepEqual(setCookiesOf(response), []);
	assert.ok(errors.some((error) => error instanceof SessionStoreError), "app.on(\"error\") hears of the failed commit");

	await assert.rejects(async () => (await fetch(`${url}/stream`, { headers: { cookie } })).text(), "a streamed answer's connection is closed");
	assert.ok(streamed[0]?.destroyed, "the body that will never be sent is destroyed");
	await assert.rejects(async () => (await fetch(`${url}/events`, { headers: { cookie } })).text());
	await new Promise((resolve) => setImmediate(resolve));
	assert.ok(cancelled, "an endless web body is cancelled");

	store.failing = "none";
	assert.deepEqual(await dataOf(url, cookie), { user_id: 123 }, "the server still answers, and the session was not destroyed");
	assert.deepEqual(rejections, []);
});

/** `sub` mounted as koa-mount does: its middleware composed (as koa-compose would), run on the app's context. */
function mounted(sub: Koa): Middleware {
	return (ctx, next) => {
		const dispatch = async (i: number): Promise<void> => {
			const middleware = sub.middleware[i];
			if (middleware === undefined) await next();
			else await middleware(ctx as Parameters<typeof middleware>[0], () => dispatch(i + 1));
		};
		return dispatch(0);
	};
}

for (const kind of STORE_KINDS) {
	it(`koa (${kind} store): a sessionMiddleware used again in a mounted sub-app keeps the app's session: one cookie, every change`, async (t) => {
		const store = await storeOf(kind, t);
		const sessions = createSessions({ store });
		const sub = new Koa();
		// The sub-app's own error handling, above its own session middleware.
		sub.use(denyOnError);
		sub.use(sessionMiddleware(sessions));
		sub.use((ctx) => {
			if (ctx.path === "/sub/throw") {
				ctx.session.set("user_id", 666);
				throw new Error("boom");
			}
			ctx.session.set("user_id", 123);
			ctx.body = JSON.stringify(ctx.session.all());
		});
		const app = new Koa();
		app.use(sessionMiddleware(sessions));
		app.use(async (ctx, next) => {
			if (ctx.path.startsWith("/sub/")) ctx.session.set("lang", "en");
			if (ctx.path === "/get") ctx.body = JSON.stringify(ctx.session.all());
			else await next();
		});
		app.use(mounted(sub));
		const server = await listen(createServer(app.callback()));
		t.after(() => Promise.all([server.close(), sessions.close()]));

		const response = await fetch(`${server.url}/sub/set`);
		assert.equal(response.status, 200);
		assert.deepEqual(JSON.parse(await response.text()), { lang: "en", user_id: 123 }, "the sub-app's handler sees what the app's middleware set");
		const sids = setCookiesOf(response).filter((cookie) => cookie.name === "sid");
		assert.equal(sids.length, 1, "one session cookie");
		const cookie = `sid=${sids[0]!.value}`;
		assert.deepEqual(await dataOf(server.url, cookie), { lang: "en", user_id: 123 }, "every change is in the session the cookie names");
		assert.equal(await sessions.count(), 1);

		const thrown = await fetch(`${server.url}/sub/throw`, { headers: { cookie } });
		assert.equal(thrown.status, 403);
		assert.deepEqual(setCookiesOf(thrown), []);
		assert.deepEqual(await dataOf(server.url, cookie), { lang: "en", user_id: 123, note: "denied" }, "the failed handler's change is dropped, the sub-app's error handler's kept");
	});

	it(`koa (${kind} store): a middleware of the app finds the app's session again after next() returns from a sub-app with another manager's sessionMiddleware`, async (t) => {
		const store = await storeOf(kind, t);
		const site = createSessions({ store });
		const admin = createSessions({ store, cookie: { name: "admin_sid" } });
		const panel = new Koa();
		panel.use(sessionMiddleware(admin));
		panel.use((ctx) => {
			ctx.session.set("admin", true);
			ctx.body = "admin";
		});
		const app = new Koa();
		app.use(sessionMiddleware(site));
		app.use(async (ctx, next) => {
			await next();
			// After the sub-app: this is the site's session, not the admin one (committed by now).
			ctx.session.set("lastPath", ctx.path);
		});
		app.use(mounted(panel));
		const server = await listen(createServer(app.callback()));
		t.after(() => Promise.all([server.close(), site.close(), admin.close()]));

		const response = await fetch(`${server.url}/sub/login`);
		assert.equal(response.status, 200);
		assert.equal(await response.text(), "admin");
		const cookies = setCookiesOf(response);
		assert.deepEqual(cookies.map((cookie) => cookie.name).sort(), ["admin_sid", "sid"]);
		const sid = cookies.find((cookie) => cookie.name === "sid")!;
		const adminSid = cookies.find((cookie) => cookie.name === "admin_sid")!;
		assert.deepEqual((await site.load(`sid=${sid.value}`)).all(), { lastPath: "/sub/login" });
		assert.deepEqual((await admin.load(`admin_sid=${adminSid.value}`)).all(), { admin: true });
	});

	it(`koa (${kind} store): a middleware above that fails after the commit: Koa's error answer keeps the session cookie`, async (t) => {
		const { url, errors } = await serve(
			t,
			await storeOf(kind, t),
			async (ctx, next) => {
				await next();
				// A failure after the session middleware returned: a logger, a response check.
				if (ctx.path === "/login") throw new Error("late failure");
				if (ctx.path === "/new") ctx.throw(409, "Conflict");
			},
			{
				"/login": (ctx) => {
					ctx.session.renew();
					ctx.session.set("admin", true);
					ctx.body = "Logged in";
				},
				"/new": (ctx) => {
					ctx.session.set("user_id", 409);
					ctx.body = "created";
				},
			},
		);
		const cookie = await loggedIn(url);
		const login = await fetch(`${url}/login`, { headers: { cookie } });
		assert.equal(login.status, 500);
		assert.equal(await login.text(), "Internal Server Error");
		const renewed = setCookiesOf(login).filter((c) => c.name === "sid");
		assert.equal(renewed.length, 1, "the renewed session's cookie is sent, even on the 500");
		assert.equal(login.headers.get("cache-control"), "no-store");
		assert.match(login.headers.get("vary") ?? "", /\bCookie\b/);
		assert.deepEqual(await dataOf(url, cookie), {}, "the commit is made: the old token is retired");
		assert.deepEqual(await dataOf(url, `sid=${renewed[0]!.value}`), { user_id: 123, admin: true }, "the cookie matches the store: the user stays logged in");

		const created = await fetch(`${url}/new`);
		assert.equal(created.status, 409);
		const sid = setCookiesOf(created).find((c) => c.name === "sid");
		assert.ok(sid, "the new session's cookie is sent with Koa's 409");
		assert.deepEqual(await dataOf(url, `sid=${sid.value}`), { user_id: 409 });
		assert.equal(errors.length, 2, "Koa reported each error");
	});
}

for (const kind of STORE_KINDS) {
	it(`koa (${kind} store): a streamed file that does not exist does not crash the server`, async (t) => {
		const crashes: unknown[] = [];
		const listener = (error: unknown) => void crashes.push(error);
		process.on("uncaughtException", listener);
		t.after(() => void process.off("uncaughtException", listener));
		const { url, errors } = await serve(t, await storeOf(kind, t), null, {
			"/download": (ctx) => {
				ctx.session.set("user_id", 1);
				ctx.type = "text/plain";
				ctx.body = createReadStream("/nonexistent/sessionkit-test-file");
			},
		});
		const outcome = await fetch(`${url}/download`, { signal: AbortSignal.timeout(2000) }).then(
			async (response) => `${response.status}: ${await response.text()}`,
			() => "closed",
		);
		assert.equal(outcome, "closed", "as Koa does without the session middleware: its pipeline closes the connection");
		assert.deepEqual(crashes, []);
		assert.ok(errors.some((error) => (error as { code?: unknown }).code === "ENOENT"), "app.on(\"error\") hears of the missing file");
		assert.deepEqual(await dataOf(url, await loggedIn(url)), { user_id: 123 }, "the server still answers");
	});
}

it("koa: an error page that reads the session when the store cannot load it gets the store's error, not a TypeError", async (t) => {
	const store = faultyStore();
	const app = new Koa();
	app.use(async (ctx, next) => {
		try {
			await next();
		} catch {
			ctx.status = 500;
			ctx.body = errorPageBody(() => ctx.session.get("user_id"));
		}
	});
	app.use(sessionMiddleware(createSessions({ store })));
	app.use((ctx) => {
		if (ctx.path === "/set") ctx.session.set("user_id", 123);
		ctx.body = String(ctx.session.get("user_id"));
	});
	const server = await listen(createServer(app.callback()));
	t.after(() => server.close());
	await assertErrorPageSeesStoreError(server.url, store);
});

for (const kind of STORE_KINDS) {
	it(`koa (${kind} store): a change made above the session middleware after next() throws SessionUsageError after a 5xx answer too, not only after a commit`, async (t) => {
		const late = lateChange();
		const upstream: Middleware = async (ctx, next) => {
			await next();
			late.attempt(ctx.session);
		};
		const { url } = await serve(t, await storeOf(kind, t), upstream, {
			"/answer": (ctx) => {
				ctx.session.set("user", "alice");
				ctx.status = Number(ctx.query.status);
				ctx.body = "answered";
			},
		});
		await assertLateChangeRefused(url, late);
	});

	it(`koa (${kind} store): a change made after a thrown error was answered with a 5xx throws SessionUsageError`, async (t) => {
		const late = lateChange();
		const upstream: Middleware = async (ctx, next) => {
			try {
				await next();
			} catch {
				ctx.status = Number(ctx.query.status);
				ctx.body = "answered";
				ctx.res.on("finish", () => late.attempt(ctx.session));
			}
		};
		const { url } = await serve(t, await storeOf(kind, t), upstream, {
			"/answer": (ctx) => {
				ctx.session.set("user", "alice");
				throw new Error("boom");
			},
		});
		await assertLateChangeRefused(url, late);
	});
}

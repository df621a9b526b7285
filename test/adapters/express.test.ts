import assert from "node:assert/strict";
import { createServer, ServerResponse } from "node:http";
import { it } from "node:test";
import express from "express";
import type { ErrorRequestHandler, NextFunction, Request, Response } from "express";
import express4 from "express4";
import { createSessions, SessionNotLoadedError, SessionUsageError } from "sessionkit";
import type { SessionManager } from "sessionkit";
import { getSession, sessionMiddleware } from "sessionkit/express";
import { memoryStore } from "sessionkit/stores/memory";
import { adapterConformance, listen } from "../adapter-conformance.js";
import { sleep } from "../helpers/keys.js";
import { faultyStore, storeOf } from "../helpers/test-stores.js";
import { assertLateChangeRefused, lateChange } from "../helpers/late-change.js";
import { countingStore } from "../helpers/counting-store.js";
import { assertErrorPageSeesStoreError, errorPageBody } from "../helpers/error-path-app.js";
import { assertCountsInPieces, COMPRESSION_VERSIONS } from "../helpers/compression.js";
import { assertCutOffThenAnswered } from "../helpers/failed-commit.js";
import { assertCallbacksCalled, type CallbackFailure, writeWithCallbacks } from "../helpers/write-callbacks.js";
import { assertOneSessionThroughNestedMiddleware } from "../helpers/nested-middleware.js";
import { assertBackpressureWhileCommitting, CountedSource, gatedStore } from "../helpers/backpressure.js";
import { assertHeadSentOnce, EARLY_HEADS, END_TIMES, lateEnd, sendHeadEarly } from "../helpers/early-head.js";
import { answerWithCode, createExpressApp } from "./express-app.js";

adapterConformance("express 5", async (sessions, options) => listen(createServer(createExpressApp(express, sessions, options))));
adapterConformance("express 4", async (sessions, options) => listen(createServer(createExpressApp(express4, sessions, options))));

it("express: getSession without the middleware throws SessionNotLoadedError", async (t) => {
	const app = express();
	let thrown: unknown;
	app.get("/", (req, res) => {
		try {
			getSession(req);
		} catch (error) {
			thrown = error;
		}
		res.send("ok");
	});
	const server = await listen(createServer(app));
	t.after(() => server.close());
	await (await fetch(server.url)).text();
	assert.ok(thrown instanceof SessionNotLoadedError);
});

it("express: a session first used after the headers went out is still readable, refuses changes, and sets no cookie", async (t) => {
	const app = express();
	app.use(sessionMiddleware(createSessions({ store: memoryStore({ sweepInterval: 0 }) })));
	app.get("/late", (req, res) => {
		res.type("text/plain");
		res.write("visits: ");
		const visits = String(req.session.get("visits") ?? 0);
		try {
			req.session.increment("visits");
			res.end(`${visits}, then changed`);
		} catch (error) {
			res.end(`${visits}, ${error instanceof SessionUsageError ? "change refused" : String(error)}`);
		}
	});
	const server = await listen(createServer(app));
	t.after(() => server.close());
	const reply = await fetch(`${server.url}/late`);
	assert.equal(reply.status, 200);
	assert.equal(await reply.text(), "visits: 0, change refused");
	assert.equal(reply.headers.get("set-cookie"), null);
});

const nodeMethods = (["writeHead", "write", "end", "flushHeaders"] as const).map((method) => [method, ServerResponse.prototype[method]] as const);

for (const [name, framework] of [["express 5", express], ["express 4", express4]] as const) {
	it(`${name}: a route in a mounted sub-app commits the session, and node's own responses are left alone`, async (t) => {
		const app = framework();
		app.use(sessionMiddleware(createSessions({ store: memoryStore({ sweepInterval: 0 }) })));
		// A mounted app swaps in its own response prototype for the requests it handles.
		const sub = framework();
		sub.get("/count", (req, res) => {
			res.send(String(req.session.increment("n")));
		});
		app.use("/sub", sub);
		app.get("/count", (req, res) => {
			res.send(String(req.session.increment("n")));
		});
		const server = await listen(createServer(app));
		t.after(() => server.close());
		const first = await fetch(`${server.url}/sub/count`);
		assert.equal(await first.text(), "1");
		const cookie = first.headers.get("set-cookie")!.split(";")[0]!;
		for (const [path, expected] of [["/sub/count", "2"], ["/count", "3"], ["/sub/count", "4"]]) {
			const reply = await fetch(`${server.url}${path}`, { headers: { cookie } });
			assert.equal(await reply.text(), expected, path);
		}
		for (const [method, original] of nodeMethods) {
			assert.equal(ServerResponse.prototype[method], original, `node's ServerResponse.prototype.${method} is not patched`);
		}
	});

	it(`${name}: a session middleware in a mounted sub-app only: the parent app's error handler still finds req.session`, async (t) => {
		const app = framework();
		const sub = framework();
		sub.use(sessionMiddleware(createSessions({ store: memoryStore({ sweepInterval: 0 }) })));
		sub.get("/fail", (req, _res, next) => {
			req.session.set("user", "ada");
			next(new Error("boom"));
		});
		app.use("/sub", sub);
		app.use(((error, req, res, _next) => {
			res.status(400).send(`${(error as Error).message}: ${String(req.session?.get("user"))}`);
		}) as ErrorRequestHandler);
		const server = await listen(createServer(app));
		t.after(() => server.close());
		const reply = await fetch(`${server.url}/sub/fail`);
		assert.equal(await reply.text(), "boom: ada");
		assert.match(reply.headers.get("set-cookie") ?? "", /^sid=/, "the 400 commits the session");
	});

	it(`${name}: a middleware that wrapped res.end before the session middleware still sends the cookie`, async (t) => {
		const app = framework();
		// As compression or a logger does: its own res.end, calling the one it found.
		app.use((_req, res, next) => {
			const end = res.end;
			res.end = function (this: typeof res, ...args: unknown[]) {
				res.setHeader("X-Wrapped", "yes");
				return (end as (...a: unknown[]) => typeof res).apply(this, args);
			} as typeof res.end;
			next();
		});
		app.use(sessionMiddleware(createSessions({ store: memoryStore({ sweepInterval: 0 }) })));
		app.get("/count", (req, res) => {
			res.send(String(req.session.increment("n")));
		});
		const server = await listen(createServer(app));
		t.after(() => server.close());
		const first = await fetch(`${server.url}/count`);
		assert.equal(await first.text(), "1");
		assert.equal(first.headers.get("x-wrapped"), "yes");
		const cookie = first.headers.get("set-cookie")?.split(";")[0];
		assert.ok(cookie, "the session cookie was sent");
		const second = await fetch(`${server.url}/count`, { headers: { cookie } });
		assert.equal(await second.text(), "2");
	});
}

// `res.end` is looked up before its argument first uses the session, and here it is another
// middleware's wrapper around node's own `end`. The commit of the memory store then waits for the
// asynchronous onDestroy callback: the response must still go out whole, headers first.
it("express: res.end(…req.session…) behind a middleware that wrapped res.end, with an onDestroy that waits, sends the headers first", async (t) => {
	const sessions = createSessions({ store: memoryStore({ sweepInterval: 0 }) });
	const destroyed: string[] = [];
	sessions.onDestroy(async ({ reason }) => {
		await new Promise((resolve) => setTimeout(resolve, 5));
		destroyed.push(reason);
	});
	const app = express();
	app.use((_req, res, next) => {
		const end = res.end;
		res.end = function (this: ServerResponse, ...args: Parameters<typeof end>) {
			return end.apply(this, args);
		} as typeof end;
		next();
	});
	app.use(sessionMiddleware(sessions));
	app.get("/login", (req, res) => {
		req.session.set("userId", 7);
		res.send("in");
	});
	app.get("/logout", (req, res) => {
		res.end(String((req.session.destroy(), "out")));
	});
	const server = await listen(createServer(app));
	t.after(async () => {
		await server.close();
		await sessions.close();
	});
	const cookie = (await fetch(`${server.url}/login`)).headers.getSetCookie()[0]!.split(";")[0]!;
	const reply = await fetch(`${server.url}/logout`, { headers: { cookie } });
	assert.equal(reply.status, 200);
	assert.equal(await reply.text(), "out");
	assert.ok(reply.headers.getSetCookie().some((line) => line.startsWith(`${sessions.cookieName}=;`)), "the session cookie is expired");
	assert.deepEqual(destroyed, ["destroyed"]);
});

for (const [name, framework] of [["express 5", express], ["express 4", express4]] as const) {
	// As on-headers (morgan) or compression does: the response's own writeHead and end, around the ones they found.
	function wrapResponse(_req: Request, res: Response, next: NextFunction): void {
		const { writeHead, end } = res;
		res.writeHead = function (this: Response, ...args: unknown[]) {
			return (writeHead as (...a: unknown[]) => Response).apply(this, args);
		} as typeof res.writeHead;
		res.end = function (this: Response, ...args: unknown[]) {
			return (end as (...a: unknown[]) => Response).apply(this, args);
		} as typeof res.end;
		next();
	}

	for (const wrapped of [false, true]) {
		it(`${name}: sessionMiddleware on the app and again on a router${wrapped ? ", behind a middleware that wrapped res.end," : ""} counts and sends one cookie`, async (t) => {
			const sessions = createSessions({ store: memoryStore({ sweepInterval: 0 }) });
			const app = framework();
			if (wrapped) app.use(wrapResponse);
			app.use(sessionMiddleware(sessions));
			const router = framework.Router();
			router.use(sessionMiddleware(sessions));
			router.get("/count", (req, res) => {
				res.send(String(req.session.increment("n")));
			});
			app.use("/api", router);
			const server = await listen(createServer(app));
			t.after(async () => {
				await server.close();
				await sessions.close();
			});
			const first = await fetch(`${server.url}/api/count`);
			assert.equal(await first.text(), "1");
			const cookies = first.headers.getSetCookie();
			assert.equal(cookies.length, 1, cookies.join(" | "));
			const second = await fetch(`${server.url}/api/count`, { headers: { cookie: cookies[0]!.split(";")[0]! } });
			assert.equal(await second.text(), "2");
		});
	}

	it(`${name}: a commit that fails on the first of several writes reaches the error handler, and the later writes do not crash the server`, async (t) => {
		const sessions = createSessions({ store: memoryStore({ sweepInterval: 0 }), maxSize: 256 });
		const app = framework();
		app.use(sessionMiddleware(sessions));
		app.get("/cart", (req, res) => {
			req.session.set("cart", "x".repeat(1000));
			res.type("text/plain");
			res.write("a");
			res.write("b");
			res.end("c");
		});
		app.use(answerWithCode);
		const server = await listen(createServer(app));
		t.after(async () => {
			await server.close();
			await sessions.close();
		});
		const reply = await fetch(`${server.url}/cart`);
		assert.equal(reply.status, 500);
		assert.equal(await reply.text(), "Error: SESSION_TOO_LARGE");
		assert.deepEqual(reply.headers.getSetCookie(), []);
	});
}

for (const [name, framework] of [["express 5", express], ["express 4", express4]] as const) {
	for (const storeName of ["memory", "file"] as const) {
		it(`${name}: an error passed to next after res.send leaves the response as the route sent it (${storeName} store)`, async (t) => {
			const sessions = createSessions({ store: await storeOf(storeName, t) });
			const app = framework();
			app.use(sessionMiddleware(sessions));
			app.get("/save", (req, res, next) => {
				req.session.set("userId", 7);
				res.send("saved");
				// e.g. an audit log written after answering, which fails
				Promise.resolve().then(() => next(new Error("after the response")));
			});
			app.use(answerWithCode);
			const server = await listen(createServer(app));
			t.after(async () => {
				await server.close();
				await sessions.close();
			});
			const reply = await fetch(`${server.url}/save`);
			assert.equal(reply.status, 200);
			assert.equal(await reply.text(), "saved");
			assert.match(reply.headers.get("content-type") ?? "", /^text\/html/);
			assert.ok(reply.headers.getSetCookie().some((line) => line.startsWith(`${sessions.cookieName}=`)));
			assert.equal((await fetch(`${server.url}/save`)).status, 200, "the server still answers");
		});

		it(`${name}: an error passed to next after the first res.write cuts the response off, as Express does (${storeName} store)`, async (t) => {
			const sessions = createSessions({ store: await storeOf(storeName, t) });
			const app = framework();
			app.use(sessionMiddleware(sessions));
			app.get("/:page", (req, res, next) => {
				req.session.set("userId", 7);
				res.type("text/plain");
				res.write("partial ");
				// e.g. the next page of a query, which fails
				Promise.resolve().then(() => (req.params.page === "fail" ? next(new Error("while streaming")) : res.end("whole")));
			});
			// Express's own final handler answers the error: it closes the connection once the headers went out.
			app.set("env", "test"); // and does not log it
			const server = await listen(createServer(app));
			t.after(async () => {
				await server.close();
				await sessions.close();
			});
			const outcome = await fetch(`${server.url}/fail`).then((reply) => reply.text()).then((text) => `complete: ${text}`, () => "cut off");
			assert.equal(outcome, "cut off", "the client can tell the response is incomplete");
			assert.equal(await (await fetch(`${server.url}/next`)).text(), "partial whole", "the server still answers");
		});
	}
}

/** As compression or a logger does: its own res.end, calling the one it found. */
function wrapEnd(_req: Request, res: Response, next: NextFunction): void {
	const end = res.end;
	res.end = function (this: Response, ...args: unknown[]) {
		return (end as (...a: unknown[]) => Response).apply(this, args);
	} as typeof res.end;
	next();
}

type Framework = typeof express | typeof express4;
type AnyRouter = ReturnType<typeof express.Router>;

/**
 * The app of the two-manager tests: `site`'s middleware on the app (behind `wrapEnd` if
 * `wrapped`), one that marks `req.session` as `mark` says, then a router at /admin with `admin`'s
 * middleware, to which `routes` adds the rest.
 */
function siteThenAdmin(framework: Framework, wrapped: boolean, site: SessionManager, admin: SessionManager, mark: (req: Request) => void, routes: (router: AnyRouter) => void) {
	const app = framework();
	if (wrapped) app.use(wrapEnd);
	app.use(sessionMiddleware(site));
	app.use((req: Request, _res: Response, next: NextFunction) => {
		mark(req);
		next();
	});
	const router = framework.Router() as AnyRouter;
	router.use(sessionMiddleware(admin));
	routes(router);
	app.use("/admin", router);
	return app;
}

for (const [name, framework] of [["express 5", express], ["express 4", express4]] as const) {
	for (const storeName of ["memory", "file"] as const) {
		for (const wrapped of [false, true]) {
			const behind = wrapped ? ", behind a middleware that wrapped res.end" : "";
			it(`${name}: sessionMiddleware on the app and again on a router keeps one session, with the changes made in between${behind} (${storeName} store)`, async (t) => {
				const sessions = createSessions({ store: await storeOf(storeName, t) });
				const app = framework();
				if (wrapped) app.use(wrapEnd);
				app.use(sessionMiddleware(sessions));
				// An app-wide middleware that records something in the session.
				app.use((req, _res, next) => {
					req.session.set("lastPath", req.originalUrl);
					next();
				});
				const router = framework.Router();
				router.use(sessionMiddleware(sessions));
				router.get("/count", (req, res) => {
					res.json({ n: req.session.increment("n"), lastPath: req.session.get("lastPath") });
				});
				app.use("/api", router);
				app.get("/data", (req, res) => {
					res.json(req.session.all());
				});
				const server = await listen(createServer(app));
				t.after(async () => {
					await server.close();
					await sessions.close();
				});
				await assertOneSessionThroughNestedMiddleware(server.url);
			});

			it(`${name}: session middlewares of two managers on one request commit both sessions${behind} (${storeName} store)`, async (t) => {
				const site = createSessions({ store: await storeOf(storeName, t) });
				const admin = createSessions({ store: await storeOf(storeName, t), cookie: { name: "admin_sid" } });
				const app = siteThenAdmin(framework, wrapped, site, admin, (req) => req.session.set("visited", true), (router) => {
					router.get("/login", (req, res) => {
						req.session.set("admin", true);
						res.send("admin");
					});
				});
				const server = await listen(createServer(app));
				t.after(async () => {
					await server.close();
					await Promise.all([site.close(), admin.close()]);
				});
				const reply = await fetch(`${server.url}/admin/login`);
				assert.equal(await reply.text(), "admin");
				const cookies = reply.headers.getSetCookie().map((line) => line.split(";")[0]!);
				assert.deepEqual(cookies.map((cookie) => cookie.split("=")[0]).sort(), ["admin_sid", "sid"], cookies.join(" | "));
				const sid = cookies.find((cookie) => cookie.startsWith("sid="))!;
				const adminSid = cookies.find((cookie) => cookie.startsWith("admin_sid="))!;
				assert.deepEqual((await site.load(sid)).all(), { visited: true }, "the app's session was committed");
				assert.deepEqual((await admin.load(adminSid)).all(), { admin: true }, "the router's session was committed");
			});
		}

		it(`${name}: a commit that fails while the route writes its body, with an error handler that answers asynchronously, cuts the response off (${storeName} store)`, async (t) => {
			const sessions = createSessions({ store: await storeOf(storeName, t), maxSize: 256 });
			const app = framework();
			app.set("env", "test"); // Express's final handler does not log
			app.use(sessionMiddleware(sessions));
			app.get("/:page", async (req, res) => {
				req.session.set("cart", "x".repeat(1000)); // too large: the commit fails
				res.type("text/plain");
				if (req.params.page === "whole") {
					res.send("whole");
					return;
				}
				res.write("line 1\n");
				await sleep(20);
				res.write("line 2\n");
				res.end("line 3\n");
			});
			const errors: unknown[] = [];
			// e.g. one that reports the error to a log service before it answers
			app.use(async (error: unknown, _req: Request, res: Response, next: NextFunction) => {
				errors.push(error);
				await sleep(50);
				if (res.headersSent) return next(error);
				res.status(500).send("failed");
			});
			const server = await listen(createServer(app));
			t.after(async () => {
				await server.close();
				await sessions.close();
			});
			await assertCutOffThenAnswered(server.url, errors);
		});

		it(`${name}: res.writeHead(status, headers) replaces a Set-Cookie set before, as node does, and adds the session cookie (${storeName} store)`, async (t) => {
			const sessions = createSessions({ store: await storeOf(storeName, t) });
			const app = framework();
			app.use(sessionMiddleware(sessions));
			app.get("/", (req, res) => {
				req.session.set("userId", 7);
				res.cookie("flash", "hello");
				res.writeHead(303, { Location: "/done", "Set-Cookie": "flash=; Max-Age=0" });
				res.end();
			});
			const server = await listen(createServer(app));
			t.after(async () => {
				await server.close();
				await sessions.close();
			});
			const reply = await fetch(server.url, { redirect: "manual" });
			assert.equal(reply.status, 303);
			const cookies = reply.headers.getSetCookie();
			assert.equal(cookies.length, 2, cookies.join(" | "));
			assert.equal(cookies[0], "flash=; Max-Age=0");
			assert.ok(cookies[1]!.startsWith(`${sessions.cookieName}=`), cookies.join(" | "));
		});
	}
}

it("express: an error page that reads the session when the store cannot load it gets the store's error, not a TypeError", async (t) => {
	const store = faultyStore();
	const app = express();
	app.use(sessionMiddleware(createSessions({ store })));
	app.get("/set", (req, res) => {
		req.session.set("user_id", 123);
		res.send("Succeed");
	});
	app.get("/get", (req, res) => {
		res.send(String(req.session.get("user_id")));
	});
	const errorPage: ErrorRequestHandler = (_error, req, res, _next) => {
		res.status(500).send(errorPageBody(() => req.session.get("user_id")));
	};
	app.use(errorPage);
	const server = await listen(createServer(app));
	t.after(() => server.close());
	await assertErrorPageSeesStoreError(server.url, store);
});

for (const [name, framework] of [["express 5", express], ["express 4", express4]] as const) {
	for (const [version, compress] of COMPRESSION_VERSIONS) for (const storeName of ["memory", "file"] as const) {
		it(`${name}: compression ${version} after the session middleware sends the body whole with the cookie (${storeName} store)`, async (t) => {
			const sessions = createSessions({ store: await storeOf(storeName, t) });
			const app = framework();
			app.use(sessionMiddleware(sessions));
			app.use(compress({ threshold: 0 }));
			app.get("/", (req, res) => {
				const n = req.session.increment("n");
				res.type("text/plain");
				res.write("n=");
				res.write(String(n));
				res.end(".");
			});
			app.use(answerWithCode);
			const server = await listen(createServer(app));
			t.after(async () => {
				await server.close();
				await sessions.close();
			});
			await assertCountsInPieces(server.url, sessions.cookieName);
		});
	}
}

for (const [name, framework] of [["express 5", express], ["express 4", express4]] as const) {
	for (const failure of ["store down", "too large", "none"] as const satisfies readonly CallbackFailure[]) {
		it(`${name}: the callbacks of res.write and res.end are called when the commit ${failure === "none" ? "succeeds" : `fails (${failure})`}`, async (t) => {
			const store = faultyStore();
			const sessions = createSessions({ store, maxSize: failure === "too large" ? 256 : undefined });
			const app = framework();
			app.use(sessionMiddleware(sessions));
			const calls: string[] = [];
			app.get("/", (req, res) => {
				req.session.set("cart", "x".repeat(1000));
				writeWithCallbacks(res, calls);
			});
			app.use(answerWithCode);
			const server = await listen(createServer(app));
			t.after(async () => {
				await server.close();
				await sessions.close();
			});
			if (failure === "store down") store.failing = "writes";
			await assertCallbacksCalled(server.url, calls, failure);
		});
	}
}

for (const [name, framework] of [["express 5", express], ["express 4", express4]] as const) {
	for (const wrapped of [false, true]) {
		const behind = wrapped ? ", behind a middleware that wrapped res.end" : "";
		it(`${name}: req.session = null turns the commit off: nothing is saved, no cookie is sent, the session stays, and getSession refuses${behind}`, async (t) => {
			const sessions = createSessions({ store: memoryStore({ sweepInterval: 0 }) });
			const app = framework();
			if (wrapped) app.use(wrapEnd);
			app.use(sessionMiddleware(sessions));
			app.get("/login", (req, res) => {
				req.session.set("user", "ada");
				res.send("in");
			});
			app.get("/user", (req, res) => {
				res.send(String(req.session.get("user")));
			});
			app.get("/null", (req, res) => {
				req.session.set("user", "bob");
				req.session.renew();
				(req as { session: unknown }).session = null;
				try {
					getSession(req);
					res.send("getSession answered");
				} catch (error) {
					res.send(error instanceof SessionUsageError ? "nulled" : String(error));
				}
			});
			const server = await listen(createServer(app));
			t.after(async () => {
				await server.close();
				await sessions.close();
			});
			const cookie = (await fetch(`${server.url}/login`)).headers.getSetCookie()[0]!.split(";")[0]!;
			const nulled = await fetch(`${server.url}/null`, { headers: { cookie } });
			assert.equal(await nulled.text(), "nulled");
			assert.deepEqual(nulled.headers.getSetCookie(), [], "the commit is off");
			assert.equal(await (await fetch(`${server.url}/user`, { headers: { cookie } })).text(), "ada", "neither the change nor the renew() was saved");
			const fresh = await fetch(`${server.url}/null`);
			assert.deepEqual(fresh.headers.getSetCookie(), [], "a new session is not stored");
		});
	}
}

for (const [name, framework] of [["express 5", express], ["express 4", express4]] as const) {
	for (const wrapped of [false, true]) {
		const behind = wrapped ? ", behind a middleware that wrapped res.end" : "";
		it(`${name}: when the second of two managers cannot load its session, the first one's session is still committed${behind}`, async (t) => {
			const site = createSessions({ store: memoryStore({ sweepInterval: 0 }) });
			const adminStore = faultyStore();
			const admin = createSessions({ store: adminStore, cookie: { name: "admin_sid" } });
			const app = siteThenAdmin(framework, wrapped, site, admin, (req) => req.session.set("visited", true), (router) => {
				router.get("/login", (req, res) => {
					req.session.set("admin", true);
					res.send("admin");
				});
			});
			// A page that degrades gracefully while the admin store is down.
			app.use(((_error, _req, res, _next) => {
				res.status(200).send("admin is down");
			}) as ErrorRequestHandler);
			const server = await listen(createServer(app));
			t.after(async () => {
				await server.close();
				await Promise.all([site.close(), admin.close()]);
			});
			const adminCookie = (await fetch(`${server.url}/admin/login`)).headers.getSetCookie().find((line) => line.startsWith("admin_sid="))!.split(";")[0]!;
			adminStore.failing = "all";
			const reply = await fetch(`${server.url}/admin/login`, { headers: { cookie: adminCookie } });
			assert.equal(await reply.text(), "admin is down");
			const sid = reply.headers.getSetCookie().find((line) => line.startsWith("sid="))?.split(";")[0];
			assert.ok(sid, `the app's session cookie is sent: ${reply.headers.getSetCookie().join(" | ")}`);
			assert.deepEqual((await site.load(sid)).all(), { visited: true }, "the app's session was committed");
		});
	}
}

for (const [name, framework] of [["express 5", express], ["express 4", express4]] as const) {
	for (const storeName of ["memory", "file"] as const) {
		for (const how of ["app.use('/api', subApp)", "subApp(req, res, next) in a handler"] as const) for (const wrapped of [false, true]) {
			const behind = wrapped ? ", behind a middleware that wrapped res.end" : "";
			it(`${name}: a sub-app with its own sessionMiddleware of the same manager (${how}) keeps one session, loaded once and committed once${behind} (${storeName} store)`, async (t) => {
				const counted = countingStore(await storeOf(storeName, t));
				const sessions = createSessions({ store: counted.store });
				const app = framework();
				if (wrapped) app.use(wrapEnd);
				app.use(sessionMiddleware(sessions));
				app.use((req, _res, next) => {
					req.session.set("lastPath", req.originalUrl);
					next();
				});
				const subApp = framework();
				subApp.use(sessionMiddleware(sessions));
				subApp.get("/count", (req, res) => {
					res.json({ n: req.session.increment("n"), lastPath: req.session.get("lastPath") });
				});
				if (how === "app.use('/api', subApp)") app.use("/api", subApp);
				else {
					app.get("/api/count", (req, res, next) => {
						req.url = "/count";
						subApp(req, res, next);
					});
				}
				app.get("/data", (req, res) => {
					res.json(req.session.all());
				});
				const server = await listen(createServer(app));
				t.after(async () => {
					await server.close();
					await sessions.close();
				});
				await assertOneSessionThroughNestedMiddleware(server.url);
				const cookie = (await fetch(`${server.url}/api/count`)).headers.getSetCookie()[0]!.split(";")[0]!;
				counted.reset();
				assert.deepEqual(await (await fetch(`${server.url}/api/count`, { headers: { cookie } })).json(), { n: 2, lastPath: "/api/count" });
				assert.equal(counted.calls.get, 1, "loaded once");
				assert.equal((counted.calls.merge ?? 0) + (counted.calls.replace ?? 0) + (counted.calls.set ?? 0), 1, `committed once: ${JSON.stringify(counted.calls)}`);
			});
		}
	}
}

for (const [name, framework] of [["express 5", express], ["express 4", express4]] as const) {
	for (const storeName of ["memory", "file"] as const) {
		it(`${name}: a change in res.on("finish") throws SessionUsageError after a 5xx answer too, not only after a commit (${storeName} store)`, async (t) => {
			const sessions = createSessions({ store: await storeOf(storeName, t) });
			const late = lateChange();
			const app = framework();
			app.use(sessionMiddleware(sessions));
			app.get("/answer", (req, res) => {
				const session = req.session;
				session.set("user", "alice");
				res.on("finish", () => late.attempt(session));
				res.status(Number(req.query.status)).send("answered");
			});
			const server = await listen(createServer(app));
			t.after(async () => {
				await server.close();
				await sessions.close();
			});
			await assertLateChangeRefused(server.url, late);
		});
	}
}

for (const [name, framework] of [["express 5", express], ["express 4", express4]] as const) {
	for (const [behind, compress] of [["", undefined], ...COMPRESSION_VERSIONS.map(([version, compress]) => [`, behind compression ${version}`, compress] as const)] as const) {
		it(`${name}: source.pipe(res) keeps its backpressure while an asynchronous commit holds the headers back${behind}`, { timeout: 20_000 }, async (t) => {
			const gate = gatedStore();
			const sessions = createSessions({ store: gate.store });
			let resolve!: (value: { source: CountedSource; res: ServerResponse }) => void;
			const started = new Promise<{ source: CountedSource; res: ServerResponse }>((done) => (resolve = done));
			const app = framework();
			if (compress !== undefined) app.use(compress({ threshold: 0 }));
			app.use(sessionMiddleware(sessions));
			app.get("/download", (req, res) => {
				req.session.set("downloading", true);
				const source = new CountedSource(compress === undefined ? undefined : 16 * 1024 * 1024);
				resolve({ source, res });
				res.type("text/plain");
				source.pipe(res);
			});
			const server = await listen(createServer(app));
			t.after(async () => {
				await server.close();
				await sessions.close();
			});
			const held = await assertBackpressureWhileCommitting(`${server.url}/download`, gate, started);
			t.diagnostic(`while committing: ${JSON.stringify(held)}`);
		});
	}
}

for (const [name, framework] of [["express 5", express], ["express 4", express4]] as const) {
	for (const storeName of ["memory", "file"] as const) {
		for (const wrapped of [false, true]) {
			const behind = wrapped ? ", behind a middleware that wrapped res.end" : "";
			it(`${name}: sessionMiddleware of a manager again after one of another manager (a, b, a) gives back its session: each loaded once, committed once, with its own cookie${behind} (${storeName} store)`, async (t) => {
				const countedSite = countingStore(await storeOf(storeName, t));
				const site = createSessions({ store: countedSite.store });
				const countedAdmin = countingStore(await storeOf(storeName, t));
				const admin = createSessions({ store: countedAdmin.store, cookie: { name: "admin_sid" } });
				const app = siteThenAdmin(framework, wrapped, site, admin, (req) => req.session.set("lastPath", req.originalUrl), (router) => {
					router.use((req, _res, next) => {
						req.session.increment("adminVisits");
						next();
					});
					router.use(sessionMiddleware(site));
					router.get("/count", (req, res) => {
						res.json({ n: req.session.increment("n"), lastPath: req.session.get("lastPath") });
					});
				});
				const server = await listen(createServer(app));
				t.after(async () => {
					await server.close();
					await Promise.all([site.close(), admin.close()]);
				});
				let cookies: string[] = [];
				for (const n of [1, 2]) {
					countedSite.reset();
					countedAdmin.reset();
					const reply = await fetch(`${server.url}/admin/count`, { headers: { cookie: cookies.join("; ") } });
					assert.deepEqual(await reply.json(), { n, lastPath: "/admin/count" }, "req.session is the app's session again, with what was set before");
					const names = reply.headers.getSetCookie().map((line) => line.split("=")[0]).sort();
					assert.deepEqual(names, n === 1 ? ["admin_sid", "sid"] : [], reply.headers.getSetCookie().join(" | "));
					if (n === 1) cookies = reply.headers.getSetCookie().map((line) => line.split(";")[0]!);
					else {
						assert.equal(countedSite.calls.get, 1, "the app's session was loaded once");
						assert.equal(countedAdmin.calls.get, 1, "the router's session was loaded once");
					}
					const writes = (calls: Record<string, number>) => (calls.merge ?? 0) + (calls.replace ?? 0) + (calls.set ?? 0);
					assert.equal(writes(countedSite.calls), 1, `the app's session was committed once: ${JSON.stringify(countedSite.calls)}`);
					assert.equal(writes(countedAdmin.calls), 1, `the router's session was committed once: ${JSON.stringify(countedAdmin.calls)}`);
				}
				const sid = cookies.find((cookie) => cookie.startsWith("sid="))!;
				const adminSid = cookies.find((cookie) => cookie.startsWith("admin_sid="))!;
				assert.deepEqual((await site.load(sid)).all(), { lastPath: "/admin/count", n: 2 });
				assert.deepEqual((await admin.load(adminSid)).all(), { adminVisits: 2 });
			});
		}
	}
}

for (const [name, framework] of [["express 5", express], ["express 4", express4]] as const) {
	for (const how of EARLY_HEADS) {
		for (const when of END_TIMES) {
			it(`${name}: res.${how} while an asynchronous commit runs, with res.end ${when}, sends one head with the cookie and the body once`, { timeout: 10_000 }, async (t) => {
				const gate = gatedStore();
				const sessions = createSessions({ store: gate.store });
				const end = lateEnd();
				const app = framework();
				app.use(sessionMiddleware(sessions));
				app.get("/", async (req, res) => {
					req.session.set("userId", 7);
					sendHeadEarly(res, how);
					await end.wait;
					res.end("the body");
				});
				const server = await listen(createServer(app));
				t.after(async () => {
					await server.close();
					await sessions.close();
				});
				await assertHeadSentOnce(server.url, gate, end, how, when, sessions.cookieName);
			});
		}
	}
}

import assert from "node:assert/strict";
import { createReadStream } from "node:fs";
import { it } from "node:test";
import type { TestContext } from "node:test";
import Fastify from "fastify";
import type { FastifyInstance } from "fastify";
import { createSessions, SessionConfigError, SessionNotLoadedError, SessionUsageError } from "sessionkit";
import { memoryStore } from "sessionkit/stores/memory";
import type { SessionManager, SessionStore } from "sessionkit";
import { getSession, hijackReply, sessionPlugin } from "sessionkit/fastify";
import { createApp } from "../../examples/fastify/app.js";
import { adapterConformance } from "../adapter-conformance.js";
import { setCookiesOf } from "../helpers/cookie-jar.js";
import { faultyStore, STORE_KINDS, storeOf } from "../helpers/test-stores.js";
import { assertErrorPageSeesStoreError, errorPageBody } from "../helpers/error-path-app.js";
import { assertLateChangeRefused, lateChange } from "../helpers/late-change.js";

adapterConformance("fastify", async (sessions, { trustProxy }) => {
	const app = await createApp(sessions, { trustProxy, logErrors: false });
	const url = await app.listen({ host: "127.0.0.1", port: 0 });
	return { url, close: () => app.close() };
});

it("fastify: getSession without the plugin throws SessionNotLoadedError", async (t) => {
	const app = Fastify();
	t.after(() => app.close());
	let thrown: unknown;
	app.get("/", async (request) => {
		try {
			getSession(request);
		} catch (error) {
			thrown = error;
		}
		return "ok";
	});
	await app.inject("/");
	assert.ok(thrown instanceof SessionNotLoadedError);
});

it("fastify: registering without a session manager fails at boot", async (t) => {
	const app = Fastify();
	t.after(() => app.close());
	await assert.rejects(async () => {
		await app.register(sessionPlugin, { sessions: undefined as unknown as SessionManager });
	}, SessionConfigError);
});

/**
 * A Fastify app with the plugin on `store`, the routes `/set` and `/get`, and the test's own
 * routes; `before` adds what must come before the plugin (hooks that run ahead of its own).
 */
async function serve(t: TestContext, store: SessionStore, routes: (app: FastifyInstance) => void, before?: (app: FastifyInstance) => void): Promise<string> {
	const sessions = createSessions({ store });
	const app = Fastify();
	before?.(app);
	await app.register(sessionPlugin, { sessions });
	app.get("/set", async (request) => {
		request.session.set("user_id", 123);
		return "Succeed";
	});
	app.get("/get", async (request) => String(request.session.get("user_id")));
	routes(app);
	const url = await app.listen({ host: "127.0.0.1", port: 0 });
	t.after(() => app.close());
	return url;
}

/** Collects unhandled rejections and uncaught exceptions while the test runs (either would stop a server). */
function processFailures(t: TestContext): unknown[] {
	const seen: unknown[] = [];
	const listener = (reason: unknown) => void seen.push(reason);
	process.on("unhandledRejection", listener);
	process.on("uncaughtException", listener);
	t.after(() => {
		process.off("unhandledRejection", listener);
		process.off("uncaughtException", listener);
	});
	return seen;
}

/** `status: body` of a GET, or `no answer` when none comes within 2 s. */
async function outcomeOf(url: string): Promise<string> {
	return fetch(url, { signal: AbortSignal.timeout(2000) }).then(
		async (response) => `${response.status}: ${await response.text()}`,
		() => "no answer",
	);
}

/** The session cookie a response sets, as a `Cookie` header value. */
function sessionCookieOf(response: Response): string | undefined {
	return response.headers.getSetCookie().find((line) => line.startsWith("sid="))?.split(";")[0];
}

for (const kind of STORE_KINDS) {
	it(`fastify (${kind} store): drops the changes of a handler whose error is answered with a 4xx`, async (t) => {
		const url = await serve(t, await storeOf(kind, t), (app) => {
			app.get("/forbidden", async (request) => {
				request.session.set("user_id", 403);
				throw Object.assign(new Error("no"), { statusCode: 403 });
			});
		});
		const fresh = await fetch(`${url}/forbidden`);
		assert.equal(fresh.status, 403);
		assert.deepEqual(setCookiesOf(fresh), [], "a new session changed by a failing handler is not stored");

		const cookie = sessionCookieOf(await fetch(`${url}/set`))!;
		const failed = await fetch(`${url}/forbidden`, { headers: { cookie } });
		assert.equal(failed.status, 403);
		assert.equal(await (await fetch(`${url}/get`, { headers: { cookie } })).text(), "123", "the change before the throw was dropped");
	});

	it(`fastify (${kind} store): drops the changes of a handler that throws, even when setErrorHandler answers 200`, async (t) => {
		const url = await serve(t, await storeOf(kind, t), (app) => {
			app.setErrorHandler(async (error: Error, _request, reply) => reply.code(200).send(`Sorry: ${error.message}`));
			app.get("/throw", async (request) => {
				request.session.set("user_id", 666);
				throw new Error("boom");
			});
		});
		const cookie = sessionCookieOf(await fetch(`${url}/set`))!;
		const thrown = await fetch(`${url}/throw`, { headers: { cookie } });
		assert.equal(await thrown.text(), "Sorry: boom");
		assert.deepEqual(setCookiesOf(thrown), []);
		assert.equal(await (await fetch(`${url}/get`, { headers: { cookie } })).text(), "123");
	});

	it(`fastify (${kind} store): commits what the error handler changes, such as a destroy() answered with a 401`, async (t) => {
		const url = await serve(t, await storeOf(kind, t), (app) => {
			app.setErrorHandler(async (_error: Error, request, reply) => {
				request.session.destroy();
				return reply.code(401).send("logged out");
			});
			app.get("/admin", async (request) => {
				request.session.set("user_id", 1);
				throw Object.assign(new Error("csrf check failed"), { statusCode: 403 });
			});
		});
		const cookie = sessionCookieOf(await fetch(`${url}/set`))!;
		const denied = await fetch(`${url}/admin`, { headers: { cookie } });
		assert.equal(denied.status, 401);
		assert.match(denied.headers.get("set-cookie") ?? "", /^sid=;/, "the destroyed session's cookie is expired");
		assert.equal(await (await fetch(`${url}/get`, { headers: { cookie } })).text(), "undefined", "the session is gone");
	});

	it(`fastify (${kind} store): a returned Response keeps its cookies and gets Cache-Control: no-store and Vary: Cookie`, async (t) => {
		const url = await serve(t, await storeOf(kind, t), (app) => {
			app.get("/response", async (request) => {
				request.session.set("user_id", 123);
				const headers = new Headers({ "cache-control": "public, max-age=3600", vary: "Accept-Encoding" });
				headers.append("set-cookie", "theme=dark; Path=/");
				return new Response("from a Response", { headers });
			});
			app.get("/redirect", async (request) => {
				request.session.set("user_id", 123);
				return Response.redirect("http://127.0.0.1/home", 303);
			});
		});
		const response = await fetch(`${url}/response`);
		assert.equal(await response.text(), "from a Response");
		assert.deepEqual(setCookiesOf(response).map((c) => c.name).sort(), ["sid", "theme"]);
		assert.equal(response.headers.get("cache-control"), "no-store", "a cache must not keep a response that sets the session cookie");
		assert.equal(response.headers.get("vary"), "Accept-Encoding, Cookie");
		const redirect = await fetch(`${url}/redirect`, { redirect: "manual" });
		assert.equal(redirect.status, 303);
		assert.ok(sessionCookieOf(redirect));
		assert.equal(redirect.headers.get("cache-control"), "no-store");
	});

	it(`fastify (${kind} store): drops the changes of a handler that returns a Response with status 500`, async (t) => {
		const url = await serve(t, await storeOf(kind, t), (app) => {
			app.get("/response-500", async (request) => {
				request.session.set("user_id", 500);
				return new Response("upstream failed", { status: 500 });
			});
		});
		const cookie = sessionCookieOf(await fetch(`${url}/set`))!;
		const failed = await fetch(`${url}/response-500`, { headers: { cookie } });
		assert.equal(failed.status, 500);
		assert.equal(await (await fetch(`${url}/get`, { headers: { cookie } })).text(), "123");
	});

	/** Routes that change the session, for an app `onSend` hook to fail on: `/renew` and `/new`. */
	const changingRoutes = (app: FastifyInstance) => {
		app.get("/renew", async (request) => {
			request.session.renew();
			request.session.set("user_id", 7);
			return "renewed";
		});
		app.get("/new", async (request) => {
			request.session.set("user_id", 8);
			return "created";
		});
	};
	const failsOn = (url: string) => url === "/renew" || url === "/new";

	it(`fastify (${kind} store): an app onSend hook added after the plugin that fails: the 500 keeps the cookie of the commit already made`, async (t) => {
		const url = await serve(t, await storeOf(kind, t), (app) => {
			changingRoutes(app);
			// Runs after the plugin's onSend, which has committed; fails the success reply only.
			app.addHook("onSend", (request, reply, payload, done) => {
				if (failsOn(request.url) && reply.statusCode < 500) done(new Error("late hook failed"));
				else done(null, payload);
			});
		});
		const cookie = sessionCookieOf(await fetch(`${url}/set`))!;
		const renewed = await fetch(`${url}/renew`, { headers: { cookie } });
		assert.equal(renewed.status, 500);
		const newCookie = sessionCookieOf(renewed);
		assert.ok(newCookie !== undefined && newCookie !== cookie, "the renewed session's cookie is sent, even on the 500");
		assert.equal(renewed.headers.get("cache-control"), "no-store");
		assert.equal(renewed.headers.get("vary"), "Cookie");
		// The commit cannot be undone: the old token is retired, the new one holds the change.
		assert.equal(await (await fetch(`${url}/get`, { headers: { cookie } })).text(), "undefined");
		assert.equal(await (await fetch(`${url}/get`, { headers: { cookie: newCookie } })).text(), "7", "the cookie matches the store: the user stays logged in");

		const created = await fetch(`${url}/new`);
		assert.equal(created.status, 500);
		const createdCookie = sessionCookieOf(created);
		assert.ok(createdCookie, "the new session's cookie is sent");
		assert.equal(await (await fetch(`${url}/get`, { headers: { cookie: createdCookie } })).text(), "8");
	});

	it(`fastify (${kind} store): an app onSend hook added before the plugin that fails: nothing is committed for the 500`, async (t) => {
		const url = await serve(t, await storeOf(kind, t), changingRoutes, (app) => {
			// Runs ahead of the plugin's onSend: the plugin's onSend then runs for the error reply only.
			app.addHook("onSend", (request, reply, payload, done) => {
				if (failsOn(request.url) && reply.statusCode < 500) throw new Error("early hook failed");
				done(null, payload);
			});
		});
		const cookie = sessionCookieOf(await fetch(`${url}/set`))!;
		const renewed = await fetch(`${url}/renew`, { headers: { cookie } });
		assert.equal(renewed.status, 500);
		assert.deepEqual(setCookiesOf(renewed), []);
		assert.equal(renewed.headers.get("cache-control"), null);
		assert.equal(await (await fetch(`${url}/get`, { headers: { cookie } })).text(), "123", "neither the renew() nor the change was committed");

		const created = await fetch(`${url}/new`);
		assert.equal(created.status, 500);
		assert.deepEqual(setCookiesOf(created), [], "a new session is not stored for the 500");
	});
}

for (const kind of STORE_KINDS) {
	it(`fastify (${kind} store): a reply Fastify refuses once the commit is made goes to the error handler, without an unhandled rejection`, async (t) => {
		const failures = processFailures(t);
		const url = await serve(t, await storeOf(kind, t), (app) => {
			app.setErrorHandler(async (error: Error & { code?: string }, _request, reply) => reply.code(500).send(`failed: ${error.code}`));
			app.get("/header", async (request, reply) => {
				request.session.set("user_id", 1);
				// Node refuses this header when Fastify writes the head, after onSend.
				return reply.header("content-disposition", 'attachment; filename="r\u00e9sum\u00e9 \u2713.pdf"').send("file");
			});
			app.get("/used", async (request) => {
				request.session.set("user_id", 1);
				const response = new Response("read already");
				await response.text();
				return response;
			});
		});
		// The error handler's reply keeps the header: Fastify's default handler answers in the end.
		assert.match(await outcomeOf(`${url}/header`), /^500: .*ERR_INVALID_CHAR/);
		assert.equal(await outcomeOf(`${url}/used`), "500: failed: FST_ERR_REP_RESPONSE_BODY_CONSUMED");
		assert.deepEqual(failures, []);
	});

	it(`fastify (${kind} store): a streamed file that does not exist is answered by the error handler, without crashing the server`, async (t) => {
		const failures = processFailures(t);
		const url = await serve(t, await storeOf(kind, t), (app) => {
			app.setErrorHandler(async (error: Error & { code?: string }, _request, reply) => reply.code(500).send(`failed: ${error.code}`));
			app.get("/download", async (request, reply) => {
				request.session.set("user_id", 1);
				return reply.type("text/plain").send(createReadStream("/nonexistent/sessionkit-test-file"));
			});
		});
		assert.equal(await outcomeOf(`${url}/download`), "500: failed: ENOENT");
		assert.deepEqual(failures, []);
		assert.equal(await outcomeOf(`${url}/get`), "200: undefined", "the server still answers");
	});
}

it("fastify: releases the body of a returned Response when the store cannot save", async (t) => {
	const store = faultyStore();
	let cancelled = false;
	const url = await serve(t, store, (app) => {
		app.get("/response", async (request) => {
			request.session.set("user_id", 123);
			// Like the body of a proxied fetch() response: it holds its upstream connection until read or cancelled.
			const body = new ReadableStream({ pull: (controller) => controller.enqueue(new Uint8Array(8)), cancel: () => void (cancelled = true) });
			return new Response(body);
		});
	});
	store.failing = "writes";
	const response = await fetch(`${url}/response`);
	assert.equal(response.status, 500);
	assert.deepEqual(setCookiesOf(response), []);
	await response.text();
	assert.ok(cancelled, "the body that will never be sent is cancelled");
});

for (const kind of STORE_KINDS) {
	it(`fastify (${kind} store): keeps the cookies set on the raw response (a connect-style middleware) beside the session cookie`, async (t) => {
		const url = await serve(
			t,
			await storeOf(kind, t),
			(app) => {
				app.get("/both", async (request, reply) => {
					reply.header("set-cookie", "theme=dark; Path=/");
					request.session.set("user_id", 1);
					return "both";
				});
			},
			(app) => {
				// As an Express/connect middleware run by @fastify/middie or @fastify/express: it writes to the raw response.
				app.addHook("onRequest", (request, reply, done) => {
					reply.raw.setHeader("set-cookie", request.url === "/both" ? ["csrf=abc; Path=/", "lang=en; Path=/"] : "csrf=abc; Path=/");
					done();
				});
			},
		);
		const set = await fetch(`${url}/set`);
		assert.deepEqual(setCookiesOf(set).map((c) => c.name).sort(), ["csrf", "sid"], "the middleware's cookie is sent with the session's");
		assert.deepEqual(setCookiesOf(await fetch(`${url}/get`)).map((c) => c.name), ["csrf"]);
		const both = await fetch(`${url}/both`);
		assert.deepEqual(setCookiesOf(both).map((c) => c.name).sort(), ["csrf", "lang", "sid", "theme"]);
	});
}

it("fastify: an error page that reads the session when the store cannot load it gets the store's error, not a TypeError", async (t) => {
	const store = faultyStore();
	const url = await serve(t, store, () => {}, (app) => {
		app.setErrorHandler(async (_error, request, reply) => reply.code(500).send(errorPageBody(() => request.session!.get("user_id"))));
	});
	await assertErrorPageSeesStoreError(url, store);
});

it("fastify: sibling plugins, each with its own session manager, keep their own sessions", async (t) => {
	const site = createSessions({ store: memoryStore({ sweepInterval: 0 }) });
	const admin = createSessions({ store: memoryStore({ sweepInterval: 0 }), cookie: { name: "admin_sid" } });
	const app = Fastify();
	const counter = (sessions: SessionManager) => async (child: FastifyInstance) => {
		await child.register(sessionPlugin, { sessions });
		child.get("/count", async (request) => String(request.session.increment("n")));
	};
	await app.register(counter(site), { prefix: "/site" });
	await app.register(counter(admin), { prefix: "/admin" });
	app.get("/plain", async (request) => String((request as { session?: unknown }).session ?? "no session"));
	const url = await app.listen({ host: "127.0.0.1", port: 0 });
	t.after(() => app.close());

	const siteReply = await fetch(`${url}/site/count`);
	assert.equal(await siteReply.text(), "1");
	assert.deepEqual(setCookiesOf(siteReply).map((c) => c.name), ["sid"]);
	const adminReply = await fetch(`${url}/admin/count`);
	assert.equal(await adminReply.text(), "1");
	assert.deepEqual(setCookiesOf(adminReply).map((c) => c.name), ["admin_sid"]);
	const cookie = [siteReply, adminReply].map((reply) => reply.headers.getSetCookie()[0]!.split(";")[0]).join("; ");
	assert.equal(await (await fetch(`${url}/site/count`, { headers: { cookie } })).text(), "2");
	assert.equal(await (await fetch(`${url}/admin/count`, { headers: { cookie } })).text(), "2");
	assert.equal(await (await fetch(`${url}/plain`)).text(), "no session", "a route outside both has no session");
});

for (const [where, build] of [
	["again on the same instance", async (app: FastifyInstance, sessions: SessionManager) => app.register(sessionPlugin, { sessions })],
	["again in a child plugin", async (app: FastifyInstance, sessions: SessionManager) => app.register(async (child) => child.register(sessionPlugin, { sessions }), { prefix: "/admin" })],
] as const) {
	it(`fastify: registering the plugin ${where} fails at boot with a SessionUsageError naming the problem`, async (t) => {
		const app = Fastify();
		t.after(() => app.close());
		await app.register(sessionPlugin, { sessions: createSessions({ store: memoryStore({ sweepInterval: 0 }) }) });
		const other = createSessions({ store: memoryStore({ sweepInterval: 0 }), cookie: { name: "admin_sid" } });
		await assert.rejects(async () => {
			await build(app, other);
			await app.ready();
		}, (error: unknown) => error instanceof SessionUsageError && /registered twice/.test(error.message));
	});
}

it("fastify: registering the plugin where another plugin already decorates request.session fails at boot with a SessionUsageError", async (t) => {
	const app = Fastify();
	t.after(() => app.close());
	app.decorateRequest("session", null as never); // as @fastify/session does
	await assert.rejects(async () => {
		await app.register(sessionPlugin, { sessions: createSessions({ store: memoryStore({ sweepInterval: 0 }) }) });
	}, (error: unknown) => error instanceof SessionUsageError && /another plugin/.test(error.message));
});

for (const kind of STORE_KINDS) {
	it(`fastify (${kind} store): hijackReply commits the session before the raw response sends its head; a change after it is refused`, async (t) => {
		const refused: unknown[] = [];
		const url = await serve(t, await storeOf(kind, t), (app) => {
			app.get("/raw", async (request, reply) => {
				request.session.set("user_id", 42);
				hijackReply(request, reply);
				reply.raw.writeHead(200, { "content-type": "text/plain" });
				reply.raw.write("raw ");
				try {
					request.session.set("user_id", 43);
				} catch (error) {
					refused.push(error);
				}
				reply.raw.end("body");
			});
			app.get("/plain-hijack", async (request, reply) => {
				request.session.set("user_id", 44);
				reply.hijack();
				reply.raw.end("dropped");
			});
		});
		const raw = await fetch(`${url}/raw`);
		assert.equal(await raw.text(), "raw body");
		const cookie = sessionCookieOf(raw);
		assert.ok(cookie, "the session cookie is sent with the raw head");
		assert.equal(raw.headers.get("cache-control"), "no-store");
		assert.equal(await (await fetch(`${url}/get`, { headers: { cookie } })).text(), "42");
		assert.equal(refused.length, 1);
		assert.ok(refused[0] instanceof SessionUsageError, String(refused[0]));
		// reply.hijack() alone is documented to skip the commit.
		assert.deepEqual(setCookiesOf(await fetch(`${url}/plain-hijack`)), []);
	});
}

it("fastify: hijackReply answers a failed commit with a 500 without the cookie, and the server goes on", async (t) => {
	const store = faultyStore();
	const url = await serve(t, store, (app) => {
		app.get("/raw", async (request, reply) => {
			request.session.set("user_id", 42);
			hijackReply(request, reply);
			reply.raw.end("raw body");
		});
	});
	store.failing = "writes";
	const failed = await fetch(`${url}/raw`);
	assert.equal(failed.status, 500);
	assert.deepEqual(setCookiesOf(failed), []);
	store.failing = "none";
	assert.equal(await outcomeOf(`${url}/get`), "200: undefined");
});

for (const kind of STORE_KINDS) {
	it(`a change in an onResponse hook throws SessionUsageError after a 5xx answer too, not only after a commit (${kind} store)`, async (t) => {
		const late = lateChange();
		const url = await serve(t, await storeOf(kind, t), (app) => {
			app.get("/answer", async (request, reply) => {
				request.session.set("user", "alice");
				reply.code(Number((request.query as { status: string }).status));
				return "answered";
			});
			app.addHook("onResponse", async (request) => {
				if (request.url.startsWith("/answer")) late.attempt(request.session);
			});
		});
		await assertLateChangeRefused(url, late);
	});
}

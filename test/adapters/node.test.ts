import assert from "node:assert/strict";
import { createServer, IncomingMessage, ServerResponse } from "node:http";
import { connect, Socket } from "node:net";
import { pipeline } from "node:stream";
import { it, type TestContext } from "node:test";
import { createSessions, SessionNotLoadedError, SessionTooLargeError, SessionUsageError } from "sessionkit";
import type { SessionManager, SessionOptions } from "sessionkit";
import { getSession, withSessions } from "sessionkit/node";
import { createApp } from "../../examples/node/app.js";
import { adapterConformance, listen, type AdapterServer } from "../adapter-conformance.js";
import { testClock } from "../helpers/clock.js";
import { assertCountsInPieces, COMPRESSION_VERSIONS } from "../helpers/compression.js";
import { CookieJar } from "../helpers/cookie-jar.js";
import { countingStore } from "../helpers/counting-store.js";
import { sleep } from "../helpers/keys.js";
import { faultyStore, storeOf, type StoreKind } from "../helpers/test-stores.js";
import { assertLateChangeRefused, lateChange } from "../helpers/late-change.js";
import { assertErrorPageSeesStoreError, errorPageBody } from "../helpers/error-path-app.js";
import { assertCutOffThenAnswered } from "../helpers/failed-commit.js";
import { assertCallbacksCalled, type CallbackFailure, writeWithCallbacks } from "../helpers/write-callbacks.js";
import { assertBackpressureWhileCommitting, CountedSource, type GatedStore, gatedStore } from "../helpers/backpressure.js";
import { assertHeadSentOnce, EARLY_HEADS, END_TIMES, lateEnd, sendHeadEarly } from "../helpers/early-head.js";

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
		const sessions = createSessions({ store: await storeOf("file", t) });
		const server = await listen(createServer(withSessions(sessions, write)));
		t.after(async () => {
			await server.close();
			await sessions.close();
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

/** A manager on the memory store (answers synchronously) or the file store (waits for the disk). */
async function sessionsOn(t: TestContext, store: StoreKind, options: SessionOptions = {}): Promise<SessionManager<Record<string, unknown>>> {
	const sessions = createSessions<Record<string, unknown>>({ store: await storeOf(store, t, { clock: options.clock }), ...options });
	t.after(() => sessions.close());
	return sessions;
}

async function serve(t: TestContext, listener: (req: IncomingMessage, res: ServerResponse) => void | Promise<void>): Promise<AdapterServer> {
	const server = await listen(createServer(listener));
	t.after(() => server.close());
	return server;
}

/** One raw HTTP/1.1 exchange on its own connection: the response exactly as sent. */
function rawRequest(url: string, head: string): Promise<string> {
	return new Promise((resolve, reject) => {
		const socket = connect({ host: "127.0.0.1", port: Number(new URL(url).port) });
		let received = "";
		socket.on("data", (chunk: Buffer) => (received += chunk.toString("latin1")));
		socket.on("end", () => resolve(received));
		socket.on("error", reject);
		socket.write(`${head}\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`);
	});
}

for (const store of ["memory", "file"] as const) {
	it(`node:http: writeHead(status, [name, value, …]) keeps repeated headers and adds the session cookie (${store} store)`, async (t) => {
		const sessions = await sessionsOn(t, store);
		const server = await serve(t, withSessions(sessions, (req, res) => {
			getSession(req).set("userId", 7);
			res.writeHead(200, ["Link", "</a.css>; rel=preload", "Link", "</b.js>; rel=preload", "Set-Cookie", "theme=dark", "Set-Cookie", "lang=en"]);
			res.end("ok");
		}));
		const response = await rawRequest(server.url, "GET / HTTP/1.1");
		assert.match(response, /^HTTP\/1\.1 200 /);
		const lines = response.split("\r\n\r\n")[0]!.split("\r\n");
		assert.deepEqual(lines.filter((line) => line.startsWith("Link:")), ["Link: </a.css>; rel=preload", "Link: </b.js>; rel=preload"]);
		const cookies = lines.filter((line) => line.startsWith("Set-Cookie:"));
		assert.deepEqual(cookies.slice(0, 2), ["Set-Cookie: theme=dark", "Set-Cookie: lang=en"]);
		assert.ok(cookies[2]?.startsWith(`Set-Cookie: ${sessions.cookieName}=`), cookies.join(" | "));
		assert.ok(lines.includes("Cache-Control: no-store"));
	});

	it(`node:http: a handler wrapped twice in withSessions answers, with one session cookie (${store} store)`, async (t) => {
		const sessions = await sessionsOn(t, store);
		// As when a sub-handler module wraps itself and the app wraps its router too.
		const inner = withSessions(sessions, (req, res) => {
			res.end(String(getSession(req).increment("n")));
		});
		const server = await serve(t, withSessions(sessions, inner));
		const first = await fetch(server.url);
		assert.equal(await first.text(), "1");
		const cookies = first.headers.getSetCookie();
		assert.equal(cookies.length, 1, cookies.join(" | "));
		const second = await fetch(server.url, { headers: { cookie: cookies[0]!.split(";")[0]! } });
		assert.equal(await second.text(), "2");
	});

	it(`node:http: withSessions inside a withSessions of the same manager keeps one session, with the changes made before, and sends one cookie (${store} store)`, async (t) => {
		const sessions = await sessionsOn(t, store);
		// A router's handler wrapped on its own, called by the app's wrapped handler.
		const api = withSessions(sessions, (req, res) => {
			const session = getSession(req);
			res.setHeader("Content-Type", "application/json");
			res.end(JSON.stringify({ n: session.increment("n"), lastPath: session.get("lastPath") }));
		});
		const server = await serve(t, withSessions(sessions, (req, res) => {
			getSession(req).set("lastPath", req.url!); // the app records something first
			return api(req, res);
		}));
		const first = await fetch(`${server.url}/a`);
		assert.deepEqual(await first.json(), { n: 1, lastPath: "/a" }, "the inner handler sees what the outer one set");
		const cookies = first.headers.getSetCookie();
		assert.equal(cookies.length, 1, cookies.join(" | "));
		const second = await fetch(`${server.url}/b`, { headers: { cookie: cookies[0]!.split(";")[0]! } });
		assert.deepEqual(await second.json(), { n: 2, lastPath: "/b" }, "both changes were committed");
		assert.deepEqual(second.headers.getSetCookie(), []);
	});

	it(`node:http: a handler that throws after changing the session keeps nothing, even when onError answers 4xx (${store} store)`, async (t) => {
		const sessions = await sessionsOn(t, store);
		const server = await serve(t, withSessions(sessions, (req, res) => {
			const session = getSession(req);
			if (req.url === "/set") {
				session.set("userId", 7);
				res.end("set");
				return;
			}
			if (req.url === "/get") {
				res.end(String(session.get("userId")));
				return;
			}
			session.set("userId", 666);
			throw new SessionUsageError("a bad request");
		}, {
			onError(error, _req, res) {
				res.statusCode = error instanceof SessionUsageError ? 400 : 500;
				res.end("refused");
			},
		}));
		const fresh = await fetch(`${server.url}/throw`);
		assert.equal(fresh.status, 400);
		assert.deepEqual(fresh.headers.getSetCookie(), [], "a new session changed by a failing handler is not stored");
		const set = await fetch(`${server.url}/set`);
		const cookie = set.headers.getSetCookie()[0]!.split(";")[0]!;
		const thrown = await fetch(`${server.url}/throw`, { headers: { cookie } });
		assert.equal(thrown.status, 400);
		assert.equal(await (await fetch(`${server.url}/get`, { headers: { cookie } })).text(), "7", "the change before the throw was dropped");
	});
}

it("node:http: a request that never calls getSession does not extend the session, with an asynchronous store", async (t) => {
	const clock = testClock(Date.now());
	const sessions = await sessionsOn(t, "file", { clock, touchAfter: 60, cookie: { persist: true } });
	const server = await serve(t, withSessions(sessions, (req, res) => {
		if (req.url === "/set") getSession(req).set("userId", 7);
		res.end("ok");
	}));
	const cookie = (await fetch(`${server.url}/set`)).headers.getSetCookie()[0]!.split(";")[0]!;
	clock.advance(120); // the idle deadline is due a refresh
	const untouched = await fetch(`${server.url}/static`, { headers: { cookie } });
	assert.equal(await untouched.text(), "ok");
	assert.deepEqual(untouched.headers.getSetCookie(), [], "no cookie: the session was not used");
	assert.equal(untouched.headers.get("cache-control"), null, "the response stays cacheable");
});

it("node:http: a commit that fails on the first of several writes answers 500, and the later writes do not crash the server", async (t) => {
	const sessions = await sessionsOn(t, "memory", { maxSize: 256 });
	const errors: unknown[] = [];
	const server = await serve(t, withSessions(sessions, (req, res) => {
		getSession(req).set("cart", "x".repeat(1000));
		res.write("a");
		res.write("b");
		res.end("c");
	}, {
		onError(error, _req, res) {
			errors.push(error);
			res.statusCode = 500;
			res.end("failed");
		},
	}));
	const response = await fetch(server.url);
	assert.equal(response.status, 500);
	assert.equal(await response.text(), "failed");
	assert.deepEqual(response.headers.getSetCookie(), []);
	assert.equal(errors.length, 1);
	assert.ok(errors[0] instanceof SessionTooLargeError, String(errors[0]));
});

for (const store of ["memory", "file"] as const) {
	it(`node:http: an error raised after res.end leaves the response as the handler sent it (${store} store)`, async (t) => {
		const sessions = await sessionsOn(t, store);
		const errors: unknown[] = [];
		const server = await serve(t, withSessions(sessions, async (req, res) => {
			getSession(req).set("userId", 7);
			res.setHeader("Content-Type", "text/plain; charset=utf-8");
			res.end("saved");
			await null; // e.g. an audit log written after answering, which fails
			throw new Error("after the response");
		}, {
			// The usual onError: it answers unless the headers went out. With an asynchronous store
			// they are still held back by the commit when it runs.
			onError(error, _req, res) {
				errors.push(error);
				if (res.headersSent) return void res.destroy();
				res.statusCode = 500;
				res.setHeader("Content-Type", "text/html");
				res.setHeader("Cache-Control", "no-cache");
				res.setHeader("Vary", "Accept");
				res.appendHeader("Set-Cookie", "notice=failed");
				res.end("<h1>failed</h1>");
			},
		}));
		const response = await fetch(server.url);
		assert.equal(response.status, 200);
		assert.equal(response.headers.get("content-type"), "text/plain; charset=utf-8");
		assert.equal(await response.text(), "saved");
		const cookies = response.headers.getSetCookie();
		assert.equal(cookies.length, 1, `only the session cookie: ${cookies.join(" | ")}`);
		assert.ok(cookies[0]!.startsWith(`${sessions.cookieName}=`));
		assert.equal(response.headers.get("cache-control"), "no-store", "none of the error handler's headers");
		assert.equal(response.headers.get("vary"), "Cookie");
		assert.equal(errors.length, 1);
		// The server still answers: the refused end did not crash it.
		assert.equal((await fetch(server.url)).status, 200);
	});
}

// With the file store, onError runs while the commit still holds the ended response back: its
// status and headers are dropped, and its Set-Cookie too when it appends to the handler's list.
it("node:http: an onError that appends a Set-Cookie after the handler's end, while the commit waits, adds nothing to the response", async (t) => {
	const sessions = await sessionsOn(t, "file");
	const server = await serve(t, withSessions(sessions, async (req, res) => {
		getSession(req).set("userId", 7);
		res.appendHeader("Set-Cookie", "theme=dark");
		res.appendHeader("Set-Cookie", "lang=en"); // now a list, which appendHeader adds to in place
		res.end("saved");
		await null; // e.g. an audit log written after answering, which fails
		throw new Error("after the response");
	}, {
		onError(_error, _req, res) {
			if (res.headersSent) return void res.destroy();
			res.statusCode = 500;
			res.appendHeader("Set-Cookie", "notice=failed");
			res.end("failed");
		},
	}));
	const response = await fetch(server.url);
	assert.equal(response.status, 200);
	assert.equal(await response.text(), "saved");
	const cookies = response.headers.getSetCookie().map((line) => line.split(";")[0]!.split("=")[0]);
	assert.deepEqual(cookies, ["theme", "lang", sessions.cookieName], "the handler's cookies and the session's, not onError's");
});

for (const store of ["memory", "file"] as const) {
	it(`node:http: a handler that fails after its first write has its response cut off, not finished with an error page (${store} store)`, async (t) => {
		const sessions = await sessionsOn(t, store);
		const errors: unknown[] = [];
		const server = await serve(t, withSessions(sessions, async (req, res) => {
			getSession(req).set("userId", 7);
			res.setHeader("Content-Type", "text/plain; charset=utf-8");
			res.write("partial ");
			await null; // e.g. the next page of a query, which fails
			if (req.url === "/") throw new Error("while streaming");
			res.end("whole");
		}, {
			// The usual onError: it answers unless the headers went out, and otherwise cuts the response off.
			onError(error, _req, res) {
				errors.push(error);
				if (res.headersSent) return void res.destroy();
				res.statusCode = 500;
				res.end("failed");
			},
		}));
		// With the memory store the head and "partial " went out before the throw; with the file store
		// the commit still held them back, so nothing did. Either way the client sees a failure.
		const outcome = await fetch(server.url).then((response) => response.text()).then((text) => `complete: ${text}`, () => "cut off");
		assert.equal(outcome, "cut off");
		assert.equal(errors.length, 1);
		assert.equal(await (await fetch(`${server.url}/next`)).text(), "partial whole", "the server still answers");
	});
}

for (const store of ["memory", "file"] as const) {
	it(`node:http: res.flushHeaders() sends the session cookie with the head, and the body follows (${store} store)`, async (t) => {
		const sessions = await sessionsOn(t, store);
		const server = await serve(t, withSessions(sessions, async (req, res) => {
			const visits = getSession(req).increment("visits");
			res.statusCode = 201;
			res.setHeader("Content-Type", "text/event-stream");
			res.flushHeaders(); // as a server-sent events endpoint does before its first event
			await new Promise((resolve) => setTimeout(resolve, 5));
			res.end(`data: ${visits}\n\n`);
		}));
		const first = await rawRequest(server.url, "GET / HTTP/1.1");
		const [head, body] = first.split("\r\n\r\n");
		assert.match(head!, /^HTTP\/1\.1 201 /);
		assert.match(head!, /\r\nContent-Type: text\/event-stream\r\n/);
		const cookie = /\r\nSet-Cookie: ([^;]+)/.exec(head!)?.[1];
		assert.ok(cookie?.startsWith(`${sessions.cookieName}=`), head);
		assert.match(body!, /data: 1\n\n/);
		const second = await rawRequest(server.url, `GET / HTTP/1.1\r\nCookie: ${cookie}`);
		assert.match(second.split("\r\n\r\n")[1]!, /data: 2\n\n/);
	});
}

it("node:http: a head sent around the hook while an asynchronous commit runs reaches onError, and the server keeps running", async (t) => {
	const sessions = await sessionsOn(t, "file");
	const errors: unknown[] = [];
	const server = await serve(t, withSessions(sessions, (req, res) => {
		getSession(req).set("userId", 7);
		if (req.url === "/around") {
			res.end("held back"); // queued behind the commit
			// As code holding node's own method would: the head is out before the commit's cookie.
			ServerResponse.prototype.writeHead.call(res, 200);
			return;
		}
		res.end("ok");
	}, {
		onError(error, _req, res) {
			errors.push(error);
			res.destroy();
		},
	}));
	await assert.rejects(fetch(`${server.url}/around`).then((response) => response.text()));
	assert.equal(errors.length, 1);
	assert.equal((errors[0] as { code?: unknown }).code, "ERR_HTTP_HEADERS_SENT");
	assert.equal(await (await fetch(`${server.url}/next`)).text(), "ok", "the server still answers");
});

for (const store of ["memory", "file"] as const) {
	it(`node:http: a commit that fails while the handler writes its body, with an onError that answers asynchronously, cuts the response off (${store} store)`, async (t) => {
		const sessions = await sessionsOn(t, store, { maxSize: 256 });
		const errors: unknown[] = [];
		const server = await serve(t, withSessions(sessions, async (req, res) => {
			getSession(req).set("cart", "x".repeat(1000)); // too large: the commit fails
			res.setHeader("Content-Type", "text/plain; charset=utf-8");
			if (req.url === "/whole") {
				res.end("whole");
				return;
			}
			res.write("line 1\n");
			await sleep(20);
			res.write("line 2\n");
			res.end("line 3\n");
		}, {
			// The usual onError, which reports the error somewhere before it answers.
			async onError(error, _req, res) {
				errors.push(error);
				await sleep(50);
				if (res.headersSent) return void res.destroy();
				res.statusCode = 500;
				res.end("failed");
			},
		}));
		await assertCutOffThenAnswered(server.url, errors);
		assert.equal(await sessions.count(), 0, "nothing was stored");
	});

	it(`node:http: writeHead(status, headers) replaces a Set-Cookie set before, as node does, and adds the session cookie (${store} store)`, async (t) => {
		const sessions = await sessionsOn(t, store);
		const server = await serve(t, withSessions(sessions, (req, res) => {
			getSession(req).set("userId", 7);
			res.setHeader("Set-Cookie", "flash=hello"); // set early, by a helper say
			// The final answer clears it: node replaces every header writeHead names.
			if (req.url === "/array") res.writeHead(303, ["Location", "/done", "Set-Cookie", "flash=; Max-Age=0"]);
			else res.writeHead(303, { Location: "/done", "Set-Cookie": "flash=; Max-Age=0" });
			res.end();
		}));
		for (const path of ["/array", "/object"]) {
			const response = await fetch(`${server.url}${path}`, { redirect: "manual" });
			assert.equal(response.status, 303, path);
			const cookies = response.headers.getSetCookie();
			assert.equal(cookies.length, 2, `${path}: ${cookies.join(" | ")}`);
			assert.equal(cookies[0], "flash=; Max-Age=0", path);
			assert.ok(cookies[1]!.startsWith(`${sessions.cookieName}=`), `${path}: ${cookies.join(" | ")}`);
			assert.equal(response.headers.get("cache-control"), "no-store", path);
		}
	});
}

it("node:http: the default onError leaves a response the handler ended as sent, while it is still flushing", async (t) => {
	const logged = t.mock.method(console, "error", () => undefined);
	const sessions = await sessionsOn(t, "memory");
	// Larger than the socket's buffers: most of it is still to be sent when the error comes.
	const body = "x".repeat(16 * 1024 * 1024);
	const server = await serve(t, withSessions(sessions, async (req, res) => {
		getSession(req).set("userId", 7);
		res.setHeader("Content-Type", "text/plain");
		res.end(body);
		await null; // e.g. an audit log written after answering, which fails
		throw new Error("after the response");
	}));
	const response = await fetch(server.url);
	assert.equal(response.status, 200);
	assert.equal((await response.text()).length, body.length, "the whole body arrives");
	assert.ok(response.headers.getSetCookie()[0]?.startsWith(`${sessions.cookieName}=`));
	assert.equal(logged.mock.callCount(), 1, "the error is logged");
	assert.equal((logged.mock.calls[0]!.arguments[0] as Error).message, "after the response");
});

it("node: an onError that reads the session when the store cannot load it gets the store's error", async (t) => {
	const store = faultyStore();
	const handler = withSessions(
		createSessions({ store }),
		(req, res) => {
			const session = getSession(req);
			if (req.url === "/set") session.set("user_id", 123);
			res.end(String(session.get("user_id")));
		},
		{
			onError: (_error, req, res) => {
				res.statusCode = 500;
				res.end(errorPageBody(() => getSession(req).get("user_id")));
			},
		},
	);
	const server = await listen(createServer(handler));
	t.after(() => server.close());
	await assertErrorPageSeesStoreError(server.url, store);
});

for (const [version, compressor] of COMPRESSION_VERSIONS) for (const store of ["memory", "file"] as const) {
	it(`node:http: compression ${version} inside withSessions sends the body whole with the cookie (${store} store)`, async (t) => {
		const sessions = await sessionsOn(t, store);
		const compress = compressor({ threshold: 0 });
		const server = await serve(t, withSessions(sessions, (req, res) => {
			compress(req as never, res as never, () => {
				const n = getSession(req).increment("n");
				res.write("n=");
				res.write(String(n));
				res.end(".");
			});
		}));
		await assertCountsInPieces(server.url, sessions.cookieName);
	});
}

for (const failure of ["store down", "too large", "none"] as const satisfies readonly CallbackFailure[]) {
	it(`node:http: the callbacks of res.write and res.end are called when the commit ${failure === "none" ? "succeeds" : `fails (${failure})`}`, async (t) => {
		const store = faultyStore();
		const sessions = createSessions({ store, maxSize: failure === "too large" ? 256 : undefined });
		t.after(() => sessions.close());
		const calls: string[] = [];
		const server = await serve(t, withSessions(sessions, (req, res) => {
			getSession(req).set("cart", "x".repeat(1000));
			writeWithCallbacks(res, calls);
		}, {
			onError(_error, _req, res) {
				res.statusCode = 500;
				res.end("failed");
			},
		}));
		if (failure === "store down") store.failing = "writes";
		await assertCallbacksCalled(server.url, calls, failure);
	});
}

for (const store of ["memory", "file"] as const) {
	it(`node:http: when an inner withSessions of another manager cannot load its session, the outer one's session is still committed (${store} store)`, async (t) => {
		const site = await sessionsOn(t, store);
		const adminStore = faultyStore();
		const admin = createSessions({ store: adminStore, cookie: { name: "admin_sid" } });
		t.after(() => admin.close());
		const inner = withSessions(admin, (req, res) => {
			getSession(req).set("admin", true);
			res.end("admin");
		}, {
			// A page that degrades gracefully while the admin store is down.
			onError(_error, _req, res) {
				res.end("admin is down");
			},
		});
		const server = await serve(t, withSessions(site, (req, res) => {
			getSession(req).set("visited", true);
			return inner(req, res);
		}));
		const adminCookie = (await fetch(server.url)).headers.getSetCookie().find((line) => line.startsWith("admin_sid="))!.split(";")[0]!;
		adminStore.failing = "all";
		const reply = await fetch(server.url, { headers: { cookie: adminCookie } });
		assert.equal(await reply.text(), "admin is down");
		const sid = reply.headers.getSetCookie().find((line) => line.startsWith("sid="))?.split(";")[0];
		assert.ok(sid, `the outer session's cookie is sent: ${reply.headers.getSetCookie().join(" | ")}`);
		assert.deepEqual((await site.load(sid)).all(), { visited: true });
	});
}

for (const store of ["memory", "file"] as const) {
	it(`node:http: withSessions of two managers, one inside the other, loads and commits both, each with its own cookie (${store} store)`, async (t) => {
		const site = await sessionsOn(t, store);
		const admin = await sessionsOn(t, store, { cookie: { name: "admin_sid" } });
		const inner = withSessions(admin, (req, res) => {
			res.end(String(getSession(req).increment("adminVisits")));
		});
		const server = await serve(t, withSessions(site, (req, res) => {
			getSession(req).increment("visits");
			return inner(req, res);
		}));
		const jar = new CookieJar();
		for (const n of [1, 2]) {
			const reply = await fetch(server.url, { headers: { cookie: jar.header() ?? "" } });
			assert.equal(await reply.text(), String(n));
			jar.update(reply);
		}
		assert.deepEqual((await site.load(`sid=${jar.get("sid")}`)).all(), { visits: 2 });
		assert.deepEqual((await admin.load(`admin_sid=${jar.get("admin_sid")}`)).all(), { adminVisits: 2 });
	});

	it(`node:http: the outer handler finds its own session again once the promise of a withSessions of another manager inside it settles (${store} store)`, async (t) => {
		const site = await sessionsOn(t, store);
		const admin = await sessionsOn(t, store, { cookie: { name: "admin_sid" } });
		// A wrapped helper that only looks at its own session; the outer handler answers.
		const checkAdmin = withSessions(admin, async (req) => {
			await sleep(1);
			(req as IncomingMessage & { isAdmin?: boolean }).isAdmin = getSession(req).get("admin") === true;
		});
		const server = await serve(t, withSessions(site, async (req, res) => {
			await checkAdmin(req, res);
			getSession(req).set("seen", (req as IncomingMessage & { isAdmin?: boolean }).isAdmin);
			res.end("ok");
		}));
		const reply = await fetch(server.url);
		assert.equal(await reply.text(), "ok");
		const cookies = reply.headers.getSetCookie().map((line) => line.split(";")[0]!);
		assert.deepEqual(cookies.map((cookie) => cookie.split("=")[0]), ["sid"], cookies.join(" | "));
		assert.deepEqual((await site.load(cookies[0]!)).all(), { seen: false });
	});

	it(`node:http: the callbacks a synchronous handler inside a withSessions of another manager leaves behind find its session (${store} store)`, async (t) => {
		const site = await sessionsOn(t, store);
		const admin = await sessionsOn(t, store, { cookie: { name: "admin_sid" } });
		const login = withSessions(admin, (req, res) => {
			let body = "";
			req.on("data", (chunk: Buffer) => (body += chunk.toString()));
			req.on("end", () => {
				getSession(req).set("admin", body);
				res.end("in");
			});
		});
		const server = await serve(t, withSessions(site, login));
		const reply = await fetch(server.url, { method: "POST", body: "alice" });
		assert.equal(await reply.text(), "in");
		const cookies = reply.headers.getSetCookie().map((line) => line.split(";")[0]!);
		assert.deepEqual(cookies.map((cookie) => cookie.split("=")[0]), ["admin_sid"], cookies.join(" | "));
		assert.deepEqual((await admin.load(cookies[0]!)).all(), { admin: "alice" });
	});

	it(`node:http: a withSessions inside one of another manager, inside one of its own, keeps its session: loaded once, one cookie (${store} store)`, async (t) => {
		const counted = countingStore(await storeOf(store, t));
		const site = createSessions<Record<string, unknown>>({ store: counted.store });
		t.after(() => site.close());
		const admin = await sessionsOn(t, store, { cookie: { name: "admin_sid" } });
		const page = withSessions(site, (req, res) => {
			const session = getSession(req);
			res.end(JSON.stringify({ n: session.increment("n"), lastPath: session.get("lastPath") }));
		});
		const panel = withSessions(admin, (req, res) => {
			getSession(req).set("admin", true);
			return page(req, res);
		});
		const server = await serve(t, withSessions(site, (req, res) => {
			getSession(req).set("lastPath", req.url!);
			return panel(req, res);
		}));
		const jar = new CookieJar();
		for (const n of [1, 2]) {
			counted.reset();
			const reply = await fetch(`${server.url}/p${n}`, { headers: { cookie: jar.header() ?? "" } });
			assert.deepEqual(await reply.json(), { n, lastPath: `/p${n}` }, "the innermost handler sees what the outer one set");
			const names = reply.headers.getSetCookie().map((line) => line.split("=")[0]);
			assert.equal(names.filter((name) => name === "sid").length, n === 1 ? 1 : 0, reply.headers.getSetCookie().join(" | "));
			jar.update(reply);
		}
		assert.equal(counted.calls.get, 1, "the second request loaded its session once");
		assert.deepEqual((await site.load(`sid=${jar.get("sid")}`)).all(), { lastPath: "/p2", n: 2 });
		assert.deepEqual((await admin.load(`admin_sid=${jar.get("admin_sid")}`)).all(), { admin: true });
	});
}

for (const store of ["memory", "file"] as const) {
	it(`node:http: a change in res.on("finish") throws SessionUsageError after a 5xx answer too, not only after a commit (${store} store)`, async (t) => {
		const sessions = await sessionsOn(t, store);
		const late = lateChange();
		const server = await serve(t, withSessions(sessions, (req, res) => {
			const session = getSession(req);
			session.set("user", "alice");
			res.on("finish", () => late.attempt(session));
			res.statusCode = Number(new URL(req.url!, "http://localhost").searchParams.get("status"));
			res.end("answered");
		}));
		await assertLateChangeRefused(server.url, late);
	});
}

// Node's own write returns false at the replay, and node emits 'drain' once the socket drains.
for (const [name, pipe] of [
	["source.pipe(res)", (source: CountedSource, res: ServerResponse) => void source.pipe(res)],
	["pipeline(source, res)", (source: CountedSource, res: ServerResponse) => void pipeline(source, res, () => {})],
] as const) {
	it(`node:http: ${name} keeps its backpressure while an asynchronous commit holds the headers back`, { timeout: 20_000 }, async (t) => {
		const { server, gate, started } = await servePiped(t, pipe);
		const held = await assertBackpressureWhileCommitting(server.url, gate, started);
		t.diagnostic(`while committing: ${JSON.stringify(held)}`);
	});
}

// A wrapper around node's write that holds the body until `end` (a caching layer, say): node's
// write is never called during the replay, so node never emits 'drain'; the hook must.
it("node:http: a piped body resumes after the commit when the write under the hook never reaches node", { timeout: 20_000 }, async (t) => {
	const holdBody = (res: ServerResponse) => {
		const chunks: Buffer[] = [];
		const end = res.end.bind(res);
		res.write = ((chunk: Buffer) => chunks.push(chunk) > 0) as ServerResponse["write"];
		res.end = (() => end(Buffer.concat(chunks))) as ServerResponse["end"];
	};
	const { server, gate, started } = await servePiped(t, (source, res) => source.pipe(res), { total: 4 * 1024 * 1024, wrap: holdBody });
	await assertBackpressureWhileCommitting(server.url, gate, started);
});

/**
 * A server whose handler changes the session, on a gated store, then hands a `CountedSource` of
 * `total` bytes to `pipe`; `wrap` gets the response before `withSessions` hooks it.
 */
async function servePiped(
	t: TestContext,
	pipe: (source: CountedSource, res: ServerResponse) => void,
	options: { total?: number; wrap?: (res: ServerResponse) => void } = {},
): Promise<{ server: AdapterServer; gate: GatedStore; started: Promise<{ source: CountedSource; res: ServerResponse }> }> {
	const gate = gatedStore();
	const sessions = createSessions({ store: gate.store });
	t.after(() => sessions.close());
	let resolve!: (value: { source: CountedSource; res: ServerResponse }) => void;
	const started = new Promise<{ source: CountedSource; res: ServerResponse }>((done) => (resolve = done));
	const handler = withSessions(sessions, (req, res) => {
		getSession(req).set("downloading", true);
		const source = new CountedSource(options.total);
		resolve({ source, res });
		pipe(source, res);
	});
	const server = await serve(t, (req, res) => {
		options.wrap?.(res);
		return handler(req, res);
	});
	return { server, gate, started };
}

for (const how of EARLY_HEADS) {
	for (const when of END_TIMES) {
		it(`node:http: res.${how} while an asynchronous commit runs, with res.end ${when}, sends one head with the cookie and the body once`, { timeout: 10_000 }, async (t) => {
			const gate = gatedStore();
			const sessions = createSessions({ store: gate.store });
			t.after(() => sessions.close());
			const end = lateEnd();
			const server = await serve(t, withSessions(sessions, async (req, res) => {
				getSession(req).set("userId", 7);
				sendHeadEarly(res, how);
				await end.wait;
				res.end("the body");
			}));
			await assertHeadSentOnce(server.url, gate, end, how, when, sessions.cookieName);
		});
	}
}

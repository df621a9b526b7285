/**
 * Committing before a node:http response sends its headers: the machinery the node:http and
 * Express adapters share. `applyCommit` and `beforeHeaders` are public through `sessionkit/node`.
 */
import type { IncomingMessage } from "node:http";
import { ServerResponse } from "node:http";
import { ADAPTER_SLOT } from "../../core/session.js";
import type { CommitResult, SessionManager } from "../../index.js";
import { SESSION_RESPONSE_HEADERS, Session } from "../../index.js";
import { closeUncommitted, isPromiseLike } from "./common.js";

/** Adds the session cookie and the headers that keep caches from storing or sharing it. */
export function applyCommit(res: ServerResponse, result: CommitResult): void {
	if (result.setCookie === null) return;
	res.appendHeader("Set-Cookie", result.setCookie);
	res.setHeader("Cache-Control", SESSION_RESPONSE_HEADERS["Cache-Control"]!);
	const vary = res.getHeader("Vary");
	const current = Array.isArray(vary) ? vary.join(", ") : vary === undefined ? "" : String(vary);
	if (!/(^|,)\s*(cookie|\*)\s*(,|$)/i.test(current)) res.setHeader("Vary", current ? `${current}, Cookie` : "Cookie");
}

const HOOK = Symbol("sessionkit.beforeHeaders");

/**
 * Adds a finished commit's headers to the response. A commit of ours resolves to one, so that
 * the head is restored (see `restoreHead`) before the commit's headers join it.
 */
type ApplyCommit = () => void;

/** Commits before the head goes out. A commit given to the public `beforeHeaders` resolves to nothing. */
type Commit = (statusCode: number) => void | PromiseLike<void | ApplyCommit>;

interface Hook {
	readonly commit: Commit;
	readonly onError: (error: unknown) => void;
	readonly writeHead: ServerResponse["writeHead"];
	readonly write: ServerResponse["write"];
	readonly end: ServerResponse["end"];
	readonly flushHeaders: ServerResponse["flushHeaders"];
	/**
	 * Express: the manager of the session whose slot holds this hook, so that a second
	 * `sessionMiddleware` can tell its own manager's session (see `slotOwner`); `null` elsewhere.
	 */
	owner: object | null;
	/**
	 * Express: the sessions of other managers that this request's `req.session` held before,
	 * each with its manager (see `carryHook`), so that a `sessionMiddleware` of one of them gives
	 * its session back instead of loading another copy; `null` while there are none.
	 */
	earlier: Array<[owner: object, session: Session<object>]> | null;
	/** "failed": the commit failed and `onError` answered; calls go on only until the response has ended (see `fail`). */
	phase: "waiting" | "committing" | "done" | "failed";
	/** Calls made while an asynchronous commit runs, replayed in order after it (made for the first such call). */
	queue: Array<() => void> | null;
	/** The callbacks of the queued `write` and `end` calls: called with an error if those calls are dropped. */
	callbacks: WriteCallback[] | null;
	/** Why the commit failed: what the callbacks of the handler's calls dropped after it get. */
	failure: Error | null;
	/** An `end` is in the queue: the response is over, and later calls are dropped as node would refuse them. */
	ended: boolean;
	/** A call that sends the head is queued, but no `end`: `headersSent` reads true meanwhile (see `holdBegun`). */
	begun: boolean;
	/** The bytes of the queued `write` calls: `writableLength` counts them meanwhile (see `holdBuffered`). */
	queuedBytes: number;
	/** A queued `write` returned false (see `enqueueWrite`): a 'drain' is owed once the queue is replayed. */
	needDrain: boolean;
}

type HookedResponse = ServerResponse & { [HOOK]?: Hook };

/** The callback of a `write` or an `end`, which node calls once the chunk is flushed or refused. */
type WriteCallback = (error?: Error | null) => void;

/** The callback a `write(chunk, [encoding], cb)` or `end([chunk], [encoding], cb)` was given. */
function callbackOf(args: unknown[]): WriteCallback | undefined {
	const last = args[args.length - 1];
	return typeof last === "function" ? (last as WriteCallback) : undefined;
}

/**
 * A call the hook drops never reaches node, which would have called its callback (with an error,
 * as the chunk is not sent): it is called here instead, as node would, on the next tick, so that
 * a handler waiting for it (a stream's `_write`, a `pipeline`) does not hang.
 */
function refuse(callback: WriteCallback | undefined, error: Error): void {
	if (callback !== undefined) process.nextTick(callback, error);
}

/** As node refuses a write after `end` (without its 'error' event, which nobody listens to). */
function writeAfterEnd(): Error {
	return Object.assign(new Error("write after end"), { code: "ERR_STREAM_WRITE_AFTER_END" });
}

/** As node refuses a write to a destroyed response. */
function destroyedError(): Error {
	return Object.assign(new Error("Cannot call write after a stream was destroyed"), { code: "ERR_STREAM_DESTROYED" });
}

function asError(error: unknown): Error {
	return error instanceof Error ? error : new Error(String(error));
}

/** The queued calls will never be made: their callbacks hear `error`. */
function dropQueue(hook: Hook, res: ServerResponse, error: Error): void {
	const callbacks = hook.callbacks;
	releaseBuffered(hook, res);
	hook.needDrain = false;
	hook.queue = null;
	hook.callbacks = null;
	if (callbacks !== null) for (const callback of callbacks) refuse(callback, error);
}

/**
 * The hook the shared methods of an Express response use (see beforeHeadersShared): it sits on
 * the request's session. Only a shared hook goes there, or a mark that passes the call on to
 * node's (see `ownerMark`): an instance-hooked response may call a shared method as its
 * "original", which must then pass the call to node's.
 */
function sharedHookOf(res: ServerResponse): Hook | undefined {
	const session = (res.req as (IncomingMessage & { session?: unknown }) | undefined)?.session;
	return session instanceof Session ? (session[ADAPTER_SLOT] as Hook | undefined) : undefined;
}

/**
 * From now on the hooked methods pass every call straight through. They stay in place: putting
 * the originals back would be four more property writes, and on Express's responses (whose
 * prototype is swapped per request) each property write costs microseconds.
 */
function done(hook: Hook): void {
	hook.phase = "done";
}

/**
 * The commit failed: `onError` answers (synchronously, or later through an error handler). A
 * handler still writing must not reach node's methods once that answer has ended the response:
 * a write after end is an 'error' event nobody listens to, which crashes the process. Nor before
 * an answer that comes later: its head and the rest of its body would go out as a 200 without the
 * cookie. `midBody`: the handler began its body (`writeHead`, `write`, `flushHeaders`) and has not
 * ended it, so more of its calls are to come.
 */
function fail(hook: Hook, res: ServerResponse, error: unknown, midBody: boolean): void {
	hook.phase = "failed";
	hook.failure = asError(error);
	dropQueue(hook, res, hook.failure);
	// Nothing was sent: onError may answer with a whole response, as it does with a synchronous store.
	releaseBegun(hook, res);
	hook.onError(error);
	if (!midBody || res.writableEnded || res.destroyed) return;
	// onError answers later, if at all, and its calls could not be told from the handler's: the
	// response is cut off now (node's methods then drop every call quietly, and a piped body
	// stops), and headersSent reads true, so that the error handler takes its mid-body way.
	holdBegun(hook, res);
	res.destroy();
}

/**
 * Starts the commit on the first call that would send headers, with the status `writeHead` was
 * given or else the response's. "now": the commit is done (it finished synchronously, or
 * earlier), so the call goes through; "later": the caller queues its call behind a running
 * commit; "dropped": the commit failed and `onError` answers instead. `ending`: the call is an
 * `end`. `res.statusCode` is read only to start the commit: on Express's responses every read
 * misses V8's caches.
 */
function settle(hook: Hook, res: ServerResponse, ending: boolean, statusCode?: number): "now" | "later" | "dropped" {
	if (hook.phase === "done") return "now";
	if (hook.phase === "committing") return "later";
	if (hook.phase === "failed") return res.writableEnded ? "dropped" : "now";
	hook.phase = "committing";
	let result: ReturnType<Commit>;
	try {
		result = hook.commit(statusCode ?? res.statusCode);
	} catch (error) {
		fail(hook, res, error, !ending);
		return "dropped";
	}
	if (!isPromiseLike(result)) {
		done(hook);
		return "now";
	}
	const sent = sentHead(res, statusCode ?? res.statusCode);
	result.then(
		(apply) => {
			// Thrown here (the head went out some other way, say) it would be an unhandled rejection.
			try {
				replay(hook, res, sent, apply);
			} catch (error) {
				fail(hook, res, error, !hook.ended);
			}
		},
		// A queued call began the response, or ended it (see `enqueue`).
		(error: unknown) => fail(hook, res, error, !hook.ended),
	);
	return "later";
}

/** After the commit: the head as it was when the commit began, the commit's headers, then the queued calls. */
function replay(hook: Hook, res: ServerResponse, sent: SentHead, apply: void | ApplyCommit): void {
	done(hook);
	releaseBegun(hook, res);
	releaseBuffered(hook, res);
	// A public `beforeHeaders` commit may resolve to anything: only a function is ours.
	const ours = typeof apply === "function";
	// Only once the handler's end is queued: while it is still writing, later writes are its own.
	if (hook.ended) restoreHead(res, sent, ours);
	if (ours) apply();
	// An error handler cut the response off (see holdBegun): nothing more can be sent.
	if (res.destroyed) {
		dropQueue(hook, res, destroyedError());
		return;
	}
	const queue = hook.queue;
	hook.queue = null;
	// Node calls them now.
	hook.callbacks = null;
	if (queue !== null) for (const deferred of queue) deferred();
	if (hook.needDrain) drainAfterReplay(hook, res);
}

/** The headers a commit adds to. One given to the public `beforeHeaders` has added to them already: they are left as they are. */
function isCommitHeader(name: string): boolean {
	return name === "set-cookie" || name === "cache-control" || name === "vary";
}

interface SentHead {
	readonly statusCode: number;
	readonly statusMessage: string;
	/** The header names (lower case, as `getHeaderNames` gives them) and their values, in step. */
	readonly names: string[];
	readonly values: Array<number | string | string[]>;
}

/**
 * The status and headers the response would have sent now, had the commit not held them back.
 * While it runs, `res.headersSent` is still false, so code that runs after the handler's `end`
 * (an error handler for a promise that rejected after it) may set another status and headers,
 * which node would have refused: the replay restores these first. Plain arrays, no Set and no
 * regular expression: it runs on every request whose commit waits for its store.
 */
function sentHead(res: ServerResponse, statusCode: number): SentHead {
	const names = res.getHeaderNames();
	return { statusCode, statusMessage: res.statusMessage, names, values: names.map((name) => copyOf(res.getHeader(name)!)) };
}

/**
 * A header's value as it is now: a list is copied, since node's `appendHeader` adds to the one
 * `getHeader` gave (a `Set-Cookie` an error handler appends would otherwise be in the "sent" head).
 */
function copyOf(value: number | string | string[]): number | string | string[] {
	return Array.isArray(value) ? value.slice() : value;
}

function sameValue(current: number | string | string[] | undefined, sent: number | string | string[]): boolean {
	if (current === sent) return true;
	if (!Array.isArray(current) || !Array.isArray(sent) || current.length !== sent.length) return false;
	for (let i = 0; i < sent.length; i++) if (current[i] !== sent[i]) return false;
	return true;
}

/** Puts back `sent`; every header, when the commit's own are still to be added (`all`), else all but those. */
function restoreHead(res: ServerResponse, sent: SentHead, all: boolean): void {
	res.statusCode = sent.statusCode;
	res.statusMessage = sent.statusMessage;
	const { names, values } = sent;
	for (let i = 0; i < names.length; i++) {
		const name = names[i]!;
		if ((all || !isCommitHeader(name)) && !sameValue(res.getHeader(name), values[i]!)) res.setHeader(name, values[i]!);
	}
	for (const name of res.getHeaderNames()) if ((all || !isCommitHeader(name)) && !names.includes(name)) res.removeHeader(name);
}

/**
 * Moves the headers given to `writeHead(status, [message], headers)` onto the response, as Node
 * does (the headers they name replace those set before, `Set-Cookie` included), so that the
 * commit adds to them instead of being overwritten by them (Node sets those last): the session
 * cookie joins a `Set-Cookie` the handler passed, and `Cache-Control: no-store` wins.
 */
function takeHeaders(res: ServerResponse, args: unknown[]): unknown[] {
	const last = args[args.length - 1];
	if (args.length < 2 || typeof last !== "object" || last === null) return args;
	if (Array.isArray(last)) {
		// [[name, value], …] or the raw [name, value, name, value, …]
		const pairs: Array<[string, unknown]> = [];
		if (Array.isArray(last[0])) for (const [name, value] of last as Array<[string, unknown]>) pairs.push([name, value]);
		else for (let i = 0; i + 1 < last.length; i += 2) pairs.push([String(last[i]), last[i + 1]]);
		// As Node does with an array: every header it names goes first, then each value is added (a name may repeat).
		for (const [name] of pairs) res.removeHeader(name);
		for (const [name, value] of pairs) if (value !== undefined) res.appendHeader(name, value as string | string[]);
	} else {
		for (const name of Object.keys(last)) {
			const value = (last as Record<string, unknown>)[name];
			if (value !== undefined) res.setHeader(name, value as string | number | string[]);
		}
	}
	return args.slice(0, -1);
}

/**
 * Queues a call behind the running commit, unless an `end` is queued already: node would refuse
 * the call, and its callback hears so.
 */
function enqueue(hook: Hook, call: () => void, callback?: WriteCallback): boolean {
	if (hook.ended) {
		refuse(callback, writeAfterEnd());
		return false;
	}
	(hook.queue ??= []).push(call);
	if (callback !== undefined) (hook.callbacks ??= []).push(callback);
	return true;
}

/** Queues a call that begins the response (`writeHead`, `write`, `flushHeaders`): see `holdBegun`. */
function enqueueBegun(hook: Hook, res: ServerResponse, call: () => void, callback?: WriteCallback): void {
	if (enqueue(hook, call, callback) && !hook.begun) holdBegun(hook, res);
}

/**
 * Queues a `write` behind the running commit. Past the response's high-water mark it returns
 * false, as node's would, so that a piped body pauses until the replay has flushed the queue
 * (see `drainAfterReplay`), instead of being read whole into memory while the store answers.
 */
function enqueueWrite(hook: Hook, res: ServerResponse, args: unknown[]): boolean {
	if (!enqueue(hook, () => (hook.write as (...a: unknown[]) => unknown).apply(res, args), callbackOf(args))) return true;
	if (!hook.begun) holdBegun(hook, res);
	const bytes = lengthOf(args[0]);
	if (hook.queuedBytes === 0 && bytes > 0) holdBuffered(hook, res);
	hook.queuedBytes += bytes;
	if (hook.queuedBytes < res.writableHighWaterMark) return true;
	hook.needDrain = true;
	return false;
}

/** A chunk's length as node counts it in `writableLength` (a string's in characters). */
function lengthOf(chunk: unknown): number {
	if (typeof chunk === "string") return chunk.length;
	return ArrayBuffer.isView(chunk) ? chunk.byteLength : 0;
}

/**
 * While writes are queued, `writableLength` counts them and `writableNeedDrain` says whether a
 * queued `write` returned false, as node's would (its own read nothing: the queue has not
 * reached it). Own properties, as `headersSent` in `holdBegun`: only a response whose body is
 * queued pays for them.
 */
function holdBuffered(hook: Hook, res: ServerResponse): void {
	const behind = Object.getPrototypeOf(res) as ServerResponse;
	Object.defineProperty(res, "writableLength", { get: () => hook.queuedBytes + Reflect.get(behind, "writableLength", res), configurable: true, enumerable: false });
	Object.defineProperty(res, "writableNeedDrain", { get: () => hook.needDrain && !hook.ended && !res.destroyed, configurable: true, enumerable: false });
}

/** Back to node's getters: the queue goes to node now, or is dropped. */
function releaseBuffered(hook: Hook, res: ServerResponse): void {
	if (hook.queuedBytes === 0) return;
	hook.queuedBytes = 0;
	delete (res as { writableLength?: number }).writableLength;
	delete (res as { writableNeedDrain?: boolean }).writableNeedDrain;
}

/**
 * A queued `write` returned false: the writer waits for 'drain'. If one of node's writes in the
 * replay returned false too, node emits it once the socket drains; else the queue is flushed to
 * node already, and it is emitted here, on the next tick, as node would.
 */
function drainAfterReplay(hook: Hook, res: ServerResponse): void {
	hook.needDrain = false;
	process.nextTick(emitDrain, res);
}

function emitDrain(res: ServerResponse): void {
	if (!res.writableNeedDrain && !res.writableEnded && !res.destroyed) res.emit("drain");
}

const HEAD_SENT: PropertyDescriptor = { value: true, configurable: true, enumerable: false, writable: false };

/**
 * The handler began its response (`writeHead`, `write`, `flushHeaders`) while the commit holds it
 * back: `headersSent` reads true until the queue is replayed, as it would without the hold. An
 * error handler then cuts the response off (the usual `if (res.headersSent) res.destroy()`, and
 * Express's own) instead of appending an error page, with status 200, to the handler's partial
 * body. An own property, shadowing node's getter: only a response whose commit waits pays for it.
 */
function holdBegun(hook: Hook, res: ServerResponse): void {
	hook.begun = true;
	Object.defineProperty(res, "headersSent", HEAD_SENT);
}

/**
 * Back to node's getter: the queue is replayed (the head really goes out), the commit failed
 * (nothing went out), or the handler queued its `end`. A whole response is waiting then: an error
 * handler's answer after it is dropped and its head restored, instead of the whole response
 * being cut off.
 */
function releaseBegun(hook: Hook, res: ServerResponse): void {
	if (!hook.begun) return;
	hook.begun = false;
	delete (res as { headersSent?: boolean }).headersSent;
}

// The four hooked methods, given the hook, which the instance and the shared methods find on
// the response under their own keys.
function writeHeadWith(hook: Hook, res: ServerResponse, given: unknown[]): ServerResponse {
	if (hook.phase === "done") {
		(hook.writeHead as (...a: unknown[]) => unknown).apply(res, given);
		return res;
	}
	const args = hook.phase === "failed" ? given : takeHeaders(res, given);
	const outcome = settle(hook, res, false, typeof args[0] === "number" ? args[0] : undefined);
	if (outcome === "now") (hook.writeHead as (...a: unknown[]) => unknown).apply(res, args);
	else if (outcome === "later") {
		// While the hold leaves `_header` unset, compression 1.7's write and end call writeHead again
		// (through `_implicitHeader`) each time: replayed, the second would throw ERR_HTTP_HEADERS_SENT.
		enqueueBegun(hook, res, () => {
			if (!res.headersSent) (hook.writeHead as (...a: unknown[]) => unknown).apply(res, args);
		});
	}
	return res;
}

function writeWith(hook: Hook, res: ServerResponse, args: unknown[]): boolean {
	const outcome = settle(hook, res, false);
	if (outcome === "now") return (hook.write as (...a: unknown[]) => boolean).apply(res, args);
	if (outcome === "later") return enqueueWrite(hook, res, args);
	refuse(callbackOf(args), hook.failure!);
	return true;
}

function endWith(hook: Hook, res: ServerResponse, args: unknown[]): ServerResponse {
	const outcome = settle(hook, res, true);
	if (outcome === "now") (hook.end as (...a: unknown[]) => unknown).apply(res, args);
	else if (outcome === "dropped") refuse(callbackOf(args), hook.failure!);
	else {
		enqueue(hook, () => (hook.end as (...a: unknown[]) => unknown).apply(res, args), callbackOf(args));
		hook.ended = true;
		// The response is whole now: no longer begun (an `end` alone never was, so costs nothing here).
		releaseBegun(hook, res);
	}
	return res;
}

function flushHeadersWith(hook: Hook, res: ServerResponse): void {
	const outcome = settle(hook, res, false);
	if (outcome === "now") hook.flushHeaders.call(res);
	else if (outcome === "later") enqueueBegun(hook, res, () => hook.flushHeaders.call(res));
}

const WITH_HOOK = { writeHead: writeHeadWith, write: writeWith, end: endWith, flushHeaders: flushHeadersWith } as const;
type Method = keyof typeof WITH_HOOK;
const METHODS = Object.keys(WITH_HOOK) as Method[];

function hookedWriteHead(this: HookedResponse, ...args: unknown[]): ServerResponse {
	return writeHeadWith(this[HOOK]!, this, args);
}

function hookedWrite(this: HookedResponse, ...args: unknown[]): boolean {
	return writeWith(this[HOOK]!, this, args);
}

function hookedEnd(this: HookedResponse, ...args: unknown[]): ServerResponse {
	return endWith(this[HOOK]!, this, args);
}

function hookedFlushHeaders(this: HookedResponse): void {
	flushHeadersWith(this[HOOK]!, this);
}

/** A hook that has not committed yet; its original methods are those `methods` has now. */
function waitingHook(commit: Commit, onError: Hook["onError"], methods: ServerResponse, owner: object | null = null): Hook {
	return { commit, onError, writeHead: methods.writeHead, write: methods.write, end: methods.end, flushHeaders: methods.flushHeaders, owner, earlier: null, phase: "waiting", queue: null, callbacks: null, failure: null, ended: false, begun: false, queuedBytes: 0, needDrain: false };
}

/**
 * Runs `commit` once, before the response's headers go out, however the handler writes
 * (`writeHead`, `write`, `end`, `flushHeaders`, a piped stream). A commit that completes
 * synchronously lets the call through at once; while an asynchronous one runs, calls are
 * queued and replayed in order afterwards. A `write` that takes the queue past the response's
 * `writableHighWaterMark` returns false, and 'drain' follows the replay, so that a piped body
 * waits for the commit instead of being read into memory (`writableLength` and
 * `writableNeedDrain` count the queue meanwhile). If `commit` fails, the queued calls are dropped,
 * the response is left unsent, and `onError` decides what to send; the handler's calls after
 * that answer ended the response are dropped too. The callback of a dropped `write` or `end` is
 * called with the commit's error, so that nothing waits for it forever. If the handler had begun its body (`write`,
 * `writeHead`, `flushHeaders`) without ending it, and `onError` returns without having ended
 * the response (it answers asynchronously), the response is cut off instead, and
 * `res.headersSent` reads true from then on.
 *
 * `commit` receives the status code the response is about to be sent with.
 */
export function beforeHeaders(res: ServerResponse, commit: (statusCode: number) => void | PromiseLike<void>, onError: (error: unknown) => void): void {
	hookBeforeHeaders(res, commit, onError);
}

/** `beforeHeaders` for the adapters' own commits (`commitFor`), which may resolve to an `ApplyCommit`. */
export function hookBeforeHeaders(res: ServerResponse, commit: Commit, onError: (error: unknown) => void): void {
	const hooked = res as HookedResponse;
	if (hooked[HOOK] !== undefined) {
		hookAgain(res, waitingHook(commit, onError, res));
		return;
	}
	hooked[HOOK] = waitingHook(commit, onError, res);
	res.writeHead = hookedWriteHead as ServerResponse["writeHead"];
	res.write = hookedWrite as ServerResponse["write"];
	res.end = hookedEnd as ServerResponse["end"];
	res.flushHeaders = hookedFlushHeaders;
}

/**
 * A second hook on a response hooked already (nested `withSessions`, a session middleware used
 * twice): its originals are the first hook's methods, which find that hook under HOOK, so this
 * one's methods hold their hook themselves. Sharing HOOK, each would call itself forever.
 */
function hookAgain(res: ServerResponse, hook: Hook): void {
	res.writeHead = function (this: ServerResponse, ...args: unknown[]) {
		return writeHeadWith(hook, this, args);
	} as ServerResponse["writeHead"];
	res.write = function (this: ServerResponse, ...args: unknown[]) {
		return writeWith(hook, this, args);
	} as ServerResponse["write"];
	res.end = function (this: ServerResponse, ...args: unknown[]) {
		return endWith(hook, this, args);
	} as ServerResponse["end"];
	res.flushHeaders = function (this: ServerResponse) {
		flushHeadersWith(hook, this);
	};
}

/** The bases whose four methods dispatch through `sharedHookOf`, with those methods. */
const installed = new WeakMap<object, Record<Method, unknown>>();

/**
 * The object just under ServerResponse.prototype in `res`'s prototype chain, when there is one
 * between them: Express's response object, which every Express app's responses inherit from
 * (each app's own response object, swapped in per request and per mounted sub-app, sits below
 * it). `null` for a plain node:http response.
 */
function sharedBase(res: ServerResponse): object | null {
	let proto = Object.getPrototypeOf(res) as object | null;
	if (proto === ServerResponse.prototype) return null;
	while (proto !== null) {
		const up = Object.getPrototypeOf(proto) as object | null;
		if (up === ServerResponse.prototype) return proto;
		proto = up;
	}
	return null;
}

/**
 * Gives `base` the four methods once: a response without a shared hook goes straight to node's.
 * `null` when `base` defines one of them itself, which must not be replaced.
 */
function install(base: object): Record<Method, unknown> | null {
	let methods = installed.get(base);
	if (methods) return methods;
	if (METHODS.some((name) => Object.hasOwn(base, name))) return null;
	const parent = Object.getPrototypeOf(base) as Record<Method, (...args: unknown[]) => unknown>;
	methods = {} as Record<Method, unknown>;
	for (const name of METHODS) {
		const withHook = WITH_HOOK[name] as (hook: Hook, res: ServerResponse, args: unknown[]) => unknown;
		const method = function (this: ServerResponse, ...args: unknown[]): unknown {
			const hook = sharedHookOf(this);
			return hook === undefined ? parent[name].apply(this, args) : withHook(hook, this, args);
		};
		Object.defineProperty(base, name, { value: method, writable: true, configurable: true, enumerable: false });
		methods[name] = method;
	}
	installed.set(base, methods);
	return methods;
}

function resolvesTo(res: ServerResponse, methods: Record<Method, unknown>): boolean {
	return res.writeHead === methods.writeHead && res.write === methods.write && res.end === methods.end && res.flushHeaders === methods.flushHeaders;
}

/**
 * `beforeHeaders` for Express, without writing to the response. Express swaps the prototype of
 * every response, which leaves each response a hidden class of its own: a property written on
 * one costs a new hidden class, and every later read of it misses V8's caches. The four methods
 * are put once on Express's shared response object, and the hook sits on the request's session
 * (`res.req.session`), an object of ours whose hidden class never changes. Kept on the response
 * under a symbol, it cost 9% more instructions on the counter route (callgrind, 780k against
 * 711k a request); in a WeakMap, more again (the scavenger traces each entry as an ephemeron).
 * A response on which any of the four is something else (another middleware wrapped `res.end`,
 * say) gets the instance hook instead.
 */
function beforeHeadersShared(res: ServerResponse, session: Session<object>, owner: object, commit: Commit, onError: (error: unknown) => void): void {
	const base = sharedBase(res);
	const methods = base === null ? null : install(base);
	if (base === null || methods === null || !resolvesTo(res, methods)) {
		hookBeforeHeaders(res, unlessNulled(res, commit), onError);
		session[ADAPTER_SLOT] = ownerMark(owner);
		return;
	}
	const parent = Object.getPrototypeOf(base) as ServerResponse;
	session[ADAPTER_SLOT] = waitingHook(commit, onError, parent, owner);
}

const NOTHING = (): void => {};

/**
 * Express: `commit`, unless `req.session` holds no session any more when the headers go out (the
 * handler set `req.session = null`): then nothing is committed. The shared methods find their
 * hook through `req.session`, so for them the commit is off then anyway; a hook on the response
 * itself must agree with them.
 */
function unlessNulled(res: ServerResponse, commit: Commit): Commit {
	return (statusCode) => ((res.req as (IncomingMessage & { session?: unknown }) | undefined)?.session instanceof Session ? commit(statusCode) : undefined);
}

/**
 * What the slot of a session hooked on its response itself holds: a hook done already, which
 * passes the calls of the shared methods on to node's (as they do with no hook), and names the
 * session's manager (see `slotOwner`). Only responses whose methods another middleware wrapped
 * pay for it.
 */
function ownerMark(owner: object): Hook {
	const node = ServerResponse.prototype;
	return { commit: NOTHING, onError: NOTHING, writeHead: node.writeHead, write: node.write, end: node.end, flushHeaders: node.flushHeaders, owner, earlier: null, phase: "done", queue: null, callbacks: null, failure: null, ended: false, begun: false, queuedBytes: 0, needDrain: false };
}

/** The manager whose Express `sessionMiddleware` made `session` and hooked its commit, or `null`. */
export function slotOwner(session: Session<object>): object | null {
	return (session[ADAPTER_SLOT] as Hook | undefined)?.owner ?? null;
}

/**
 * Commits `session`, unless `statusCode` is a server error (then it is closed uncommitted), and
 * adds the cookie it gives to `res`: at once when the commit completes synchronously, else
 * through the `ApplyCommit` it resolves to.
 */
export function commitFor<Data extends object>(res: ServerResponse, sessions: SessionManager<Data>, session: Session<Data>, request: { readonly secure: boolean }, statusCode: number): void | PromiseLike<ApplyCommit> {
	if (statusCode >= 500) {
		closeUncommitted(session);
		return;
	}
	const result = sessions.commit(session, request);
	if (isPromiseLike(result)) return result.then((settled) => () => applyCommit(res, settled));
	applyCommit(res, result);
}

/**
 * Express: commits `session` before `res` sends its headers (unless the status is 500 or above)
 * and adds the cookie it gives; `onError` answers if the commit fails. Through the shared hook
 * (see `beforeHeadersShared`) where it can. `request.secure` is read only when a cookie is sent
 * (see `SessionManager.commit`).
 */
export function commitBeforeHeaders<Data extends object>(
	res: ServerResponse,
	sessions: SessionManager<Data>,
	session: Session<Data>,
	request: { readonly secure: boolean },
	onError: (error: unknown) => void,
): void {
	const commit: Commit = (statusCode) => commitFor(res, sessions, session, request, statusCode);
	beforeHeadersShared(res, session as Session<object>, sessions, commit, onError);
}

/**
 * `commitBeforeHeaders` for a session that replaces `previous`, another manager's, in
 * `req.session` (a `sessionMiddleware` of each on one request). The shared methods find their
 * hook through `req.session`: `previous`'s slot moves to `session`, and `session`'s own hook goes
 * on the response, where it chains (its originals are the shared methods). Both are committed.
 */
export function commitBeforeHeadersInstead<Data extends object>(
	res: ServerResponse,
	sessions: SessionManager<Data>,
	session: Session<Data>,
	request: { readonly secure: boolean },
	onError: (error: unknown) => void,
	previous: Session<object>,
): void {
	carryHook(previous, session as Session<object>, sessions);
	hookBeforeHeaders(res, unlessNulled(res, (statusCode) => commitFor(res, sessions, session, request, statusCode)), onError);
}

/**
 * Express: `session`, of the manager `owner`, takes the place of `previous` in `req.session`. The
 * shared methods find their hook through `req.session`: `previous`'s slot moves to `session`, so
 * that `previous` is still committed. Also for a session that failed to load (see
 * `SessionManager.unavailable`), whose error handler's response must commit `previous` all the
 * same, and for one of `owner`'s that `previous` replaced earlier (see `earlierSession`).
 */
export function carryHook(previous: Session<object>, session: Session<object>, owner: object): void {
	const carried = previous[ADAPTER_SLOT] as Hook | undefined;
	previous[ADAPTER_SLOT] = undefined;
	if (carried === undefined) {
		session[ADAPTER_SLOT] = ownerMark(owner);
		return;
	}
	// `session` is in req.session now, and `previous` among the earlier ones.
	const earlier = carried.earlier?.filter(([manager]) => manager !== owner) ?? [];
	if (carried.owner !== null) earlier.push([carried.owner, previous]);
	carried.earlier = earlier;
	// The slot's owner is that of the session it is on now.
	carried.owner = owner;
	session[ADAPTER_SLOT] = carried;
}

/**
 * Express: the session of `owner` that `req.session` held before `current`, another manager's,
 * took its place, if any: a `sessionMiddleware` of `owner` after one of another manager's
 * (a, b, a on one request) gives it back, instead of loading and committing a second copy.
 */
export function earlierSession(current: Session<object>, owner: object): Session<object> | undefined {
	const earlier = (current[ADAPTER_SLOT] as Hook | undefined)?.earlier;
	return earlier?.find(([manager]) => manager === owner)?.[1];
}

/**
 * A plain 500 on a node response whose handler failed (the error logged already). Mid-body, the
 * response is cut off instead, so the client sees it is incomplete; after the handler's end it is
 * whole, and cutting it would truncate what is still being flushed.
 */
export function answerServerError(res: ServerResponse): void {
	if (res.headersSent) {
		if (!res.writableEnded) res.destroy();
		return;
	}
	res.statusCode = 500;
	res.setHeader("Content-Type", "text/plain; charset=utf-8");
	res.end("Internal Server Error");
}

import { fromBase64Url, toBase64Url } from "./crypto.js";
import { SessionCodecError } from "./errors.js";

/**
 * Turns one session value into a string and back. Stores keep the strings opaque, except that
 * a plain finite number must encode as its JSON text (`42` → `"42"`), so stores can apply
 * increments.
 */
export interface Codec {
	encode(value: unknown): string;
	/** Throws `SessionCodecError` for text it did not produce or that would pollute prototypes. */
	decode(text: string): unknown;
}

const TAG = "$t";
/** Exactly the JSON number grammar (RFC 8259 §6), for which `Number(text)` equals `JSON.parse(text)`. */
const JSON_NUMBER = /^-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?$/;
/** Keys that can reach a prototype when a decoded object is merged into another. */
const FORBIDDEN_KEYS = new Set(["__proto__", "constructor", "prototype"]);
/**
 * The deepest nesting stored: far past any session's data, far under the stack. Without it a
 * value nested a few thousand levels deep encoded, then overflowed the stack on every read
 * from a deeper call (a request's handler), and could never be read again.
 */
const MAX_DEPTH = 256;

/** True for a key that no session data, flash or nested object may use. */
export function isForbiddenKey(key: string): boolean {
	return FORBIDDEN_KEYS.has(key);
}

function toJSONSafe(value: unknown, path: string, seen: Set<object>): unknown {
	switch (typeof value) {
		case "string":
		case "boolean":
			return value;
		case "number":
			return Number.isFinite(value) ? value : { [TAG]: "Num", v: String(value) };
		case "bigint":
			return { [TAG]: "BigInt", v: value.toString() };
		case "undefined":
			return { [TAG]: "Undef" };
		case "object":
			break;
		default:
			throw new SessionCodecError(`cannot store a ${typeof value} at ${path}: only JSON values, Date, Map, Set, BigInt and Uint8Array round-trip.`);
	}
	if (value === null) return null;
	if (seen.has(value)) throw new SessionCodecError(`cannot store a circular reference at ${path}.`);
	// `seen` holds the objects around this one: its depth.
	if (seen.size >= MAX_DEPTH) throw new SessionCodecError(`cannot store a value nested more than ${MAX_DEPTH} levels deep.`);
	seen.add(value);
	try {
		if (Array.isArray(value)) {
			// Not map(), which skips holes: JSON would write them as null. A hole reads as undefined.
			const out: unknown[] = [];
			for (let i = 0; i < value.length; i++) out.push(toJSONSafe(value[i], `${path}[${i}]`, seen));
			return out;
		}
		if (value instanceof Date) return { [TAG]: "Date", v: Number.isNaN(value.getTime()) ? null : value.toISOString() };
		if (value instanceof Uint8Array) return { [TAG]: "Bytes", v: toBase64Url(value) };
		if (value instanceof Map) {
			return { [TAG]: "Map", v: [...value].map(([k, v], i) => [toJSONSafe(k, `${path}<key ${i}>`, seen), toJSONSafe(v, `${path}<value ${i}>`, seen)]) };
		}
		if (value instanceof Set) return { [TAG]: "Set", v: [...value].map((v, i) => toJSONSafe(v, `${path}<item ${i}>`, seen)) };
		const proto = Object.getPrototypeOf(value);
		if (proto !== Object.prototype && proto !== null) {
			const kind = (proto as { constructor?: { name?: string } }).constructor?.name ?? "object";
			throw new SessionCodecError(`cannot store a ${kind} instance at ${path}: only plain objects, arrays, Date, Map, Set, BigInt and Uint8Array round-trip.`);
		}
		const out: Record<string, unknown> = {};
		for (const key of Object.keys(value)) {
			if (isForbiddenKey(key)) throw new SessionCodecError(`refusing key "${key}" at ${path}: it could pollute prototypes.`);
			const item = (value as Record<string, unknown>)[key];
			if (item === undefined) continue;
			out[key] = toJSONSafe(item, `${path}.${key}`, seen);
		}
		return TAG in out ? { [TAG]: "Obj", v: out } : out;
	} finally {
		seen.delete(value);
	}
}

function fromJSONSafe(value: unknown): unknown {
	if (typeof value !== "object" || value === null) return value;
	if (Array.isArray(value)) return value.map(fromJSONSafe);
	const object = value as Record<string, unknown>;
	const tag = object[TAG];
	if (tag !== undefined) return revive(tag, object.v);
	return plainObject(object);
}

function plainObject(object: Record<string, unknown>): Record<string, unknown> {
	const out: Record<string, unknown> = {};
	for (const key of Object.keys(object)) {
		if (isForbiddenKey(key)) throw new SessionCodecError(`refusing to decode key "${key}": it could pollute prototypes.`);
		out[key] = fromJSONSafe(object[key]);
	}
	return out;
}

function revive(tag: unknown, v: unknown): unknown {
	switch (tag) {
		case "Num":
			if (v === "NaN" || v === "Infinity" || v === "-Infinity") return Number(v);
			break;
		case "BigInt":
			if (typeof v === "string" && /^-?\d+$/.test(v)) return BigInt(v);
			break;
		case "Undef":
			return undefined;
		case "Date":
			if (v === null) return new Date(Number.NaN);
			if (typeof v === "string") return new Date(v);
			break;
		case "Bytes": {
			const bytes = typeof v === "string" ? fromBase64Url(v) : null;
			if (bytes) return bytes;
			break;
		}
		case "Map":
			if (Array.isArray(v) && v.every((entry) => Array.isArray(entry) && entry.length === 2)) {
				return new Map(v.map(([k, item]) => [fromJSONSafe(k), fromJSONSafe(item)]));
			}
			break;
		case "Set":
			if (Array.isArray(v)) return new Set(v.map(fromJSONSafe));
			break;
		case "Obj":
			if (typeof v === "object" && v !== null && !Array.isArray(v)) return plainObject(v as Record<string, unknown>);
			break;
	}
	throw new SessionCodecError(`cannot decode a value tagged ${JSON.stringify(tag)}.`);
}

/**
 * The default codec: JSON, plus Date, Map, Set, BigInt, Uint8Array, undefined inside arrays,
 * NaN and ±Infinity. Refuses `__proto__`, `constructor` and `prototype` keys both ways,
 * circular references, functions, symbols and class instances.
 */
export const defaultCodec: Codec = {
	encode(value: unknown): string {
		// For a finite number String() spells it exactly as JSON does ("1e+21", "0" for -0), faster.
		if (typeof value === "number" && Number.isFinite(value)) return String(value);
		if (typeof value === "string" || typeof value === "boolean" || value === null) return JSON.stringify(value);
		return JSON.stringify(toJSONSafe(value, "value", new Set()));
	},
	decode(text: string): unknown {
		// Counters are decoded on every request that increments them: a JSON number needs no parser.
		if (JSON_NUMBER.test(text)) return Number(text);
		let parsed: unknown;
		try {
			parsed = JSON.parse(text);
		} catch (cause) {
			throw new SessionCodecError("cannot decode a stored value: it is not valid JSON.", { cause });
		}
		if (typeof parsed !== "object" || parsed === null) return parsed;
		try {
			return fromJSONSafe(parsed);
		} catch (error) {
			// Text nested past the stack (not written by encode, which stops at MAX_DEPTH).
			if (error instanceof RangeError) throw new SessionCodecError("cannot decode a stored value: it is nested too deeply.", { cause: error });
			throw error;
		}
	},
};

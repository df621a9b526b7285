import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { defaultCodec, SessionCodecError } from "sessionkit";
import { sampleValues } from "sessionkit/testing";

const roundTrip = (value: unknown) => defaultCodec.decode(defaultCodec.encode(value));

describe("default codec", () => {
	it("round-trips JSON values, Date, Map, Set, BigInt and Uint8Array", () => {
		for (const [name, value] of Object.entries(sampleValues)) assert.deepEqual(roundTrip(value), value, name);
	});

	it("round-trips nested special values, NaN, ±Infinity, invalid dates and undefined in arrays", () => {
		const value = { when: [new Date(0), new Map([[new Date(1), new Set([1n])]])], nums: [Number.NaN, Infinity, -Infinity], bad: new Date(Number.NaN), holes: [1, undefined, 3] };
		const back = roundTrip(value) as typeof value;
		assert.deepEqual(back.when, value.when);
		assert.ok(Number.isNaN(back.nums[0]));
		assert.equal(back.nums[1], Infinity);
		assert.equal(back.nums[2], -Infinity);
		assert.ok(Number.isNaN(back.bad.getTime()));
		assert.deepEqual(back.holes, [1, undefined, 3]);
	});

	it("keeps a user object that happens to have a $t key as a plain object", () => {
		assert.deepEqual(roundTrip({ $t: "Date", v: "2020-01-01" }), { $t: "Date", v: "2020-01-01" });
		assert.deepEqual(roundTrip([{ $t: "Map", v: [] }]), [{ $t: "Map", v: [] }]);
	});

	it("encodes a finite number as its JSON text, so stores can increment it", () => {
		assert.equal(defaultCodec.encode(41), "41");
		assert.equal(defaultCodec.encode(-2.5), "-2.5");
		for (const n of [0, -0, 1e21, 1e-7, -123456789.125, Number.MAX_SAFE_INTEGER, Number.MIN_VALUE]) {
			assert.equal(defaultCodec.encode(n), JSON.stringify(n));
		}
	});

	it("decodes JSON numbers exactly as JSON.parse does, and refuses what JSON refuses", () => {
		for (const text of ["0", "-0", "42", "-3.5", "1e21", "1E-7", "1e400", " 7"]) {
			assert.ok(Object.is(defaultCodec.decode(text), JSON.parse(text)), text);
		}
		for (const text of ["01", "1.", "+1", ".5", "0x10", "1_0"]) assert.throws(() => defaultCodec.decode(text), SessionCodecError, text);
	});

	it("refuses functions, symbols, class instances and circular references with a clear error", () => {
		class Point {
			x = 1;
		}
		const circular: Record<string, unknown> = {};
		circular.self = circular;
		for (const value of [() => 1, Symbol("s"), new Point(), circular, { nested: [new Point()] }]) {
			assert.throws(() => defaultCodec.encode(value), SessionCodecError);
		}
		assert.throws(() => defaultCodec.encode(new Point()), /Point instance at value/);
	});

	it("refuses __proto__, constructor and prototype keys when encoding", () => {
		const polluted = JSON.parse('{"__proto__": {"isAdmin": true}}');
		assert.throws(() => defaultCodec.encode(polluted), SessionCodecError);
		assert.throws(() => defaultCodec.encode({ constructor: { prototype: {} } }), SessionCodecError);
	});

	it("refuses to decode text that would pollute prototypes, at any depth", () => {
		for (const text of ['{"__proto__":{"isAdmin":true}}', '{"a":[{"constructor":{"prototype":{"x":1}}}]}', '{"$t":"Obj","v":{"__proto__":{}}}', '{"$t":"Map","v":[["k",{"__proto__":{}}]]}']) {
			assert.throws(() => defaultCodec.decode(text), SessionCodecError, text);
		}
		assert.equal(({} as Record<string, unknown>).isAdmin, undefined);
	});

	it("refuses text it did not produce: bad JSON or unknown tags", () => {
		assert.throws(() => defaultCodec.decode("{not json"), SessionCodecError);
		assert.throws(() => defaultCodec.decode('{"$t":"Function","v":"alert(1)"}'), SessionCodecError);
		assert.throws(() => defaultCodec.decode('{"$t":"BigInt","v":"12a"}'), SessionCodecError);
	});
});

describe("default codec, at the edges of what it stores", () => {
	/** `value` inside `depth` levels of `wrap`. */
	const nested = (depth: number, wrap: (inner: unknown) => unknown): unknown => {
		let value: unknown = 1;
		for (let i = 0; i < depth; i++) value = wrap(value);
		return value;
	};
	/** Runs `read` from `frames` calls deeper in the stack: a request's handler sits below a framework's. */
	const deeper = (frames: number, read: () => unknown): unknown => (frames === 0 ? read() : deeper(frames - 1, read));

	it("refuses a value nested too deeply to be read back, instead of storing one that fails every later read", () => {
		const wraps: Array<[string, (inner: unknown) => unknown]> = [
			["object", (inner) => ({ a: inner })],
			["array", (inner) => [inner]],
			["Map", (inner) => new Map([["k", inner]])],
		];
		for (const [name, wrap] of wraps) {
			// The deepest value set() would store.
			let stored = 0;
			let refused = 20_000;
			while (refused - stored > 1) {
				const depth = (stored + refused) >> 1;
				try {
					defaultCodec.encode(nested(depth, wrap));
					stored = depth;
				} catch (error) {
					assert.ok(error instanceof SessionCodecError, `${name} × ${depth}: refused with ${String(error)}`);
					refused = depth;
				}
			}
			const text = defaultCodec.encode(nested(stored, wrap));
			assert.doesNotThrow(() => deeper(2000, () => defaultCodec.decode(text)), `${name} × ${stored} was stored: it must read back`);
		}
		assert.doesNotThrow(() => defaultCodec.encode(nested(100, (inner) => ({ a: [inner] }))), "ordinary nesting is stored");
	});

	it("refuses to decode stored text nested past any stack with a SessionCodecError, not a RangeError", () => {
		const text = `${'{"a":'.repeat(20_000)}1${"}".repeat(20_000)}`;
		assert.throws(() => defaultCodec.decode(text), SessionCodecError);
	});

	it("reads a hole of a sparse array back as undefined, as it reads in the array stored, not as null", () => {
		const sparse: unknown[] = [];
		sparse[2] = "x";
		const back = roundTrip(sparse) as unknown[];
		assert.equal(back.length, 3);
		assert.equal(back[0], undefined);
		assert.equal(back[1], undefined);
		assert.equal(back[2], "x");
		assert.deepEqual(roundTrip({ list: new Array(2) }), { list: [undefined, undefined] });
	});
});

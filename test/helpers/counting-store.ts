import type { SessionStore } from "sessionkit";

/** Wraps a real store and counts each call, to assert how many round trips a request costs. */
export function countingStore(inner: SessionStore): { store: SessionStore; calls: Record<string, number>; reset(): void } {
	const calls: Record<string, number> = {};
	const store = new Proxy(inner, {
		get(target, property, receiver) {
			const value = Reflect.get(target, property, receiver);
			if (typeof value !== "function") return value;
			return (...args: unknown[]) => {
				calls[String(property)] = (calls[String(property)] ?? 0) + 1;
				return value.apply(target, args);
			};
		},
	});
	return {
		store,
		calls,
		reset() {
			for (const key of Object.keys(calls)) delete calls[key];
		},
	};
}

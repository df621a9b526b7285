/** How the stores' option errors show a bad value (the core's options.ts words it the same way). */

/**
 * `value` for a message: a string quoted (`"5"`, so it cannot pass for the number 5), a number,
 * boolean, `null` or `undefined` as written, and anything else by its type (never its contents).
 */
export function describe(value: unknown): string {
	if (typeof value === "string") return JSON.stringify(value);
	if (typeof value === "number" || typeof value === "boolean" || value == null) return String(value);
	return typeof value;
}

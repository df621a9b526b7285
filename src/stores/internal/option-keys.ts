/** Refusing option keys a store does not know, so a typo (`maxSesions`) fails at startup instead of doing nothing. */
import { SessionConfigError } from "../../core/errors.js";

/**
 * Throws `SessionConfigError` naming the first own key of `options` that is not in `known`;
 * `factory` names the function in the message (`"memoryStore"`). Not an object: nothing to check.
 */
export function checkOptionKeys(options: unknown, known: readonly string[], factory: string): void {
	if (typeof options !== "object" || options === null) return;
	for (const key of Object.keys(options)) {
		if (!known.includes(key)) throw new SessionConfigError(key, `is not an option of ${factory}. Known: ${known.join(", ")}.`);
	}
}

/**
 * For a store made as `factory(connection, options)`: refuses unknown keys in both arguments, and
 * names an option given in the connection (`postgresStore({ pool, table })`), which would be
 * ignored there: a store on the wrong table, say.
 */
export function checkStoreArguments(factory: string, connection: unknown, connectionKeys: readonly string[], options: unknown, optionKeys: readonly string[]): void {
	for (const key of typeof connection === "object" && connection !== null ? Object.keys(connection) : []) {
		if (optionKeys.includes(key)) {
			throw new SessionConfigError(key, `belongs in ${factory}'s second argument, the options: ${factory}(connection, { ${key} }), not in the connection.`);
		}
	}
	checkOptionKeys(connection, connectionKeys, `${factory}'s connection (its first argument)`);
	checkOptionKeys(options, optionKeys, factory);
}

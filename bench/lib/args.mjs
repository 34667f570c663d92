/**
 * A bench script's own arguments. `pnpm bench:x -- --flag` passes the `--`
 * along, which `parseArgs` would read as the end of the options: drop it.
 */
export const scriptArgs = (argv = process.argv.slice(2)) => argv.filter((a) => a !== '--')

/** The version of @aegis/core (a test keeps it equal to package.json's). */
export const AEGIS_VERSION = '0.1.0'

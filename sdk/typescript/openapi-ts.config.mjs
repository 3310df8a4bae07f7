// @hey-api/openapi-ts options for scripts/generate-clients.sh, which sets SPEC and TS_CLIENT_DIR.
export default {
  // A path, never a bare `a/b`: openapi-ts would read that as a Hey API registry name.
  input: process.env.SPEC ?? './openapi/openapi.yaml',
  output: {
    path: process.env.TS_CLIENT_DIR ?? 'build/clients/typescript',
    // Explicit `.js` import suffixes: the output compiles under `module: nodenext` and runs
    // on Node.js as is.
    importFileExtension: '.js',
  },
  plugins: ['@hey-api/client-fetch', '@hey-api/typescript', '@hey-api/sdk'],
};

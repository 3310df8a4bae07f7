// orval options for scripts/generate-clients.sh, which sets SPEC and ORVAL_CLIENT_DIR.
// Only where to read and where to write: every other option is orval's default (the axios
// client, one file with the functions and the types).
import { defineConfig } from 'orval';

export default defineConfig({
  storekeeper: {
    input: { target: process.env.SPEC ?? '../../openapi/openapi.yaml' },
    output: { target: `${process.env.ORVAL_CLIENT_DIR ?? '../../build/clients/orval'}/storekeeper.ts` },
  },
});

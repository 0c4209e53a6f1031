// Lint rules: typescript-eslint's type-aware recommended set, plus the project's rules:
// no `any` in core code, no floating promises (an unhandled rejection kills a daemon).
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', 'bench/results/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      '@typescript-eslint/no-explicit-any': 'error',
      '@typescript-eslint/no-floating-promises': ['error', {
        allowForKnownSafeCalls: [{ from: 'package', name: ['test', 'it', 'describe', 'suite'], package: 'node:test' }],
      }],
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/consistent-type-imports': 'error',
      'no-constant-condition': ['error', { checkLoops: false }],
      eqeqeq: ['error', 'always'],
    },
  },
  {
    files: ['**/*.js', '**/*.mjs'],
    ...tseslint.configs.disableTypeChecked,
    languageOptions: { ...tseslint.configs.disableTypeChecked.languageOptions, globals: { process: 'readonly', console: 'readonly' } },
  },
  {
    // Sans-IO rule (ARCHITECTURE.md §5): the core touches the world only through ports.
    // The Node adapters live in src/node/, which this block does not cover.
    files: ['src/transport/**/*.ts', 'src/rmr/**/*.ts', 'src/brmr/**/*.ts', 'src/nbd/**/*.ts', 'src/util/**/*.ts', 'src/sim/**/*.ts'],
    rules: {
      'no-restricted-imports': ['error', {
        paths: ['node:net', 'node:tls', 'node:fs', 'node:fs/promises', 'net', 'tls', 'fs', 'node:dgram', 'node:child_process'],
      }],
      'no-restricted-globals': ['error', 'setTimeout', 'setInterval', 'setImmediate', 'clearTimeout', 'clearInterval'],
      'no-restricted-properties': ['error', { object: 'Math', property: 'random' }, { object: 'Date', property: 'now' }],
    },
  },
);

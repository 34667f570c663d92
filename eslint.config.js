// @ts-check
import js from '@eslint/js'
import globals from 'globals'
import tseslint from 'typescript-eslint'

export default tseslint.config(
  { ignores: ['**/dist/**', '**/node_modules/**', 'coverage/**', 'bench/results/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/consistent-type-imports': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_' }],
    },
  },
  {
    // Adapters see core only through its public entry.
    files: ['packages/{express,fastify,koa}/src/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            {
              group: ['@aegis/core/*', '../../core/*', '../core/*'],
              message: 'Import from @aegis/core only.',
            },
          ],
        },
      ],
    },
  },
  {
    // kernel/ holds the building blocks every engine shares (errors, warnings, the
    // logger, problem(), Rejection and HeaderList, option helpers): it imports no
    // engine, nor the pipeline or the options that compose them.
    files: ['packages/core/src/kernel/**'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            {
              group: [
                'limiter',
                'gateway',
                'balancer',
                'cors',
                'headers',
                'validator',
                'metrics',
                'audit',
                'store',
                'client',
                'server',
                'pipeline',
                'options',
                'node',
              ].flatMap((dir) => [`../${dir}`, `../${dir}/*`]),
              message:
                'kernel/ imports no engine, nor pipeline/, options/ or node/: move the shared piece into kernel/.',
            },
          ],
        },
      ],
    },
  },
  {
    files: ['**/*.js', '**/*.mjs', '**/*.cjs'],
    ...tseslint.configs.disableTypeChecked,
    languageOptions: { ...tseslint.configs.disableTypeChecked.languageOptions, globals: globals.node },
  },
  {
    files: ['**/test/**/*.ts', 'test/**/*.ts'],
    rules: {
      '@typescript-eslint/no-unsafe-assignment': 'off',
      '@typescript-eslint/no-unsafe-member-access': 'off',
      '@typescript-eslint/no-unsafe-argument': 'off',
    },
  },
)

// A start-up failure with the one line the CLI prints.

export class StartError extends Error {
  override readonly name = 'StartError';
}

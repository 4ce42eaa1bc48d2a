// Small DOM helpers shared by the chat view and its hosts.

/** A new element with its class and, when given, its `data-testid` hook. */
export function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  className: string,
  testid?: string
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  node.className = className;
  if (testid) {
    node.dataset.testid = testid;
  }
  return node;
}

/** 32 random hex digits: ids for new messages and conversations. */
export function randomId(): string {
  // crypto.randomUUID exists only in secure contexts; getRandomValues everywhere.
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, b => b.toString(16).padStart(2, '0')).join('');
}

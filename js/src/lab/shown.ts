// Which conversations the user can see right now, in any chat view of this page (the side
// panel, a main-area tab, a notebook output). A reply that ends while its conversation is not
// shown marks it unread and raises a notification.

const views = new Map<string, Set<HTMLElement>>(); // conversation id -> roots of views showing it

/** `root` shows `conversationId` until the returned function is called. */
export function showing(conversationId: string, root: HTMLElement): () => void {
  let roots = views.get(conversationId);
  if (roots === undefined) {
    views.set(conversationId, (roots = new Set()));
  }
  roots.add(root);
  return () => {
    roots!.delete(root);
    if (roots!.size === 0 && views.get(conversationId) === roots) {
      views.delete(conversationId);
    }
  };
}

/** Whether some view of `conversationId` is on screen: attached, not hidden (a closed panel, a
 * background tab, a collapsed output) and the page itself visible. */
export function isShown(conversationId: string): boolean {
  if (document.visibilityState !== 'visible') {
    return false;
  }
  for (const root of views.get(conversationId) ?? []) {
    if (root.isConnected && root.getClientRects().length > 0) {
      return true;
    }
  }
  return false;
}

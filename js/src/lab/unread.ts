// Conversations with a reply the user has not seen yet, kept in the browser's local storage so
// the marks survive a reload.

const KEY = 'jupyter-streamchat:unread';
const MAX = 1000; // marks kept; the oldest go first

export class Unread {
  private ids: string[];

  constructor() {
    this.ids = Unread.load();
  }

  has(conversationId: string): boolean {
    return this.ids.includes(conversationId);
  }

  add(conversationId: string): void {
    if (!this.has(conversationId)) {
      this.ids = [...this.ids, conversationId].slice(-MAX);
      this.save();
    }
  }

  delete(conversationId: string): void {
    if (this.has(conversationId)) {
      this.ids = this.ids.filter(id => id !== conversationId);
      this.save();
    }
  }

  private save(): void {
    try {
      localStorage.setItem(KEY, JSON.stringify(this.ids));
    } catch {
      // storage full or refused: the marks last as long as the page
    }
  }

  private static load(): string[] {
    try {
      const ids = JSON.parse(localStorage.getItem(KEY) ?? '[]');
      return Array.isArray(ids) ? ids.filter((id): id is string => typeof id === 'string') : [];
    } catch {
      return [];
    }
  }
}

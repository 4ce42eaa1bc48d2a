// Earlier messages of a long conversation, a page at a time. SUBSCRIBE brings only the latest
// messages (HISTORY, with `hasMore` when older ones exist); when the user scrolls to the top,
// the view asks the conversation model for the page before the oldest shown (LOAD_HISTORY, see
// conversation.ts, which knows whether there is one and whether it is on its way), and puts the
// HISTORY_PAGE that answers above what it shows, leaving in place what the user is reading.

/** How close to the top (in pixels) a scroll must come to ask for the next page. */
const NEAR_TOP_PX = 40;

export class EarlierMessages {
  /** "Loading earlier messages…", shown at the top of the list while a page is asked for. */
  readonly marker: HTMLElement;
  // Earlier messages render their markdown after they are put in, a few blocks per frame, and
  // grow as they do; above the view, that would push what the user reads down. The list does
  // not anchor its scroll by itself (`overflow-anchor: none`, for following new text at the
  // bottom), so this does it for the elements it put in: their last height, and a watch on it.
  private readonly heights = new WeakMap<Element, number>();
  private readonly resizes: ResizeObserver;

  /**
   * @param list the scrolling message list; the marker goes first in it
   * @param load asks for the page before the oldest message shown; false when none was asked
   *   (there is none, one is on its way, or the connection is down)
   */
  constructor(
    private readonly list: HTMLElement,
    private readonly load: () => boolean
  ) {
    this.marker = document.createElement('div');
    this.marker.className = 'streamchat-load-earlier';
    this.marker.dataset.testid = 'streamchat-load-earlier';
    this.marker.setAttribute('role', 'status');
    const text = document.createElement('span');
    text.textContent = 'Loading earlier messages…';
    this.marker.append(text);
    this.marker.hidden = true;
    this.resizes = new ResizeObserver(this.onResize);
  }

  /** The user scrolled: ask for a page if they reached the top. */
  onScroll(): void {
    if (this.list.scrollTop <= NEAR_TOP_PX) {
      this.ask();
    }
  }

  /** Messages were added: a list too short to scroll cannot reach its top by scrolling, so
   * it asks for older messages until it fills its box (only while it is on screen). */
  onContent(): void {
    if (this.list.clientHeight > 0 && this.list.scrollHeight <= this.list.clientHeight) {
      this.ask();
    }
  }

  /** The page arrived: put its messages' elements above the oldest shown, keeping the user's
   * place (the distance from the bottom of the content to the bottom of the view). */
  prepend(elements: HTMLElement[]): void {
    const fromBottom = this.list.scrollHeight - this.list.scrollTop;
    const before = this.marker.isConnected ? this.marker.nextSibling : this.list.firstChild;
    const fragment = document.createDocumentFragment();
    fragment.append(...elements);
    this.list.insertBefore(fragment, before);
    this.list.scrollTop = this.list.scrollHeight - fromBottom;
    for (const element of elements) {
      this.heights.set(element, element.getBoundingClientRect().height);
      this.resizes.observe(element);
    }
  }

  /** Stop watching every element (the list was emptied). */
  forget(): void {
    this.resizes.disconnect();
  }

  /** Elements put in above grew or shrank: scroll by as much, if they start above the view,
   * so that what is in view stays where it is. */
  private onResize = (entries: ResizeObserverEntry[]): void => {
    const viewTop = this.list.getBoundingClientRect().top;
    let shift = 0;
    for (const { target } of entries) {
      const box = target.getBoundingClientRect();
      const before = this.heights.get(target) ?? box.height;
      this.heights.set(target, box.height);
      if (box.top < viewTop) {
        shift += box.height - before;
      }
    }
    if (shift !== 0) {
      this.list.scrollTop += shift;
    }
  };

  /** Show the marker while a page is on its way. */
  setLoading(loading: boolean): void {
    this.marker.hidden = !loading;
  }

  private ask(): void {
    if (this.load()) {
      this.marker.hidden = false;
    }
  }
}

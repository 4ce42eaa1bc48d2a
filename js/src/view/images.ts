// Images in agent output, which is untrusted: showing them must not make the browser fetch
// anything the user did not ask for. A reply steered by a prompt injection could otherwise put
// data into an image URL (remote, or on the Jupyter server itself) and have it sent without a
// click. So an image loads at once only when it makes no request (a `data:` raster image) or
// comes from a host the user allowed; any other becomes a button that names where the image
// would come from and loads it on click.
//
// The sanitizer calls `vetElement` on every element before anything reaches the page, and
// `insertPlaceholders` on its output, still outside the page.

/** Raster formats a `data:` URL may hold and load at once. SVG is left out: it is a document
 * that can itself refer to other URLs. */
const RASTER_DATA_URL = /^data:image\/(?:png|jpeg|gif|webp|avif|bmp)(?:;[^,]*)?,/i;

/** Attributes that make a browser fetch (or ping) a URL by themselves. An image's `src` is
 * vetted; every other one of these is removed. */
const FETCHING_ATTRIBUTES = [
  'src',
  'srcset',
  'poster',
  'background',
  'lowsrc',
  'dynsrc',
  'ping',
  'data',
  'codebase',
  'action',
  'formaction',
  'xlink:href',
  'style'
];

// Where a vetted image that waits for a click keeps its URL and the host it names.
const WAITING_SRC = 'data-streamchat-src';
const WAITING_FROM = 'data-streamchat-from';

/** Which image hosts may load without a click. Shared by all renderers of a view, so a new
 * list applies to everything rendered from then on. */
export class ImagePolicy {
  private exact = new Set<string>();
  private suffixes: string[] = [];

  constructor(hosts: readonly string[] = []) {
    this.setHosts(hosts);
  }

  /** Exact host names ("example.org") or suffix patterns ("*.example.org", which matches
   * "a.example.org" and "b.a.example.org" but not "example.org" itself). */
  setHosts(hosts: readonly string[]): void {
    this.exact.clear();
    this.suffixes = [];
    for (const raw of hosts) {
      if (typeof raw !== 'string') {
        continue; // the list comes from a notebook; ignore what is not a host
      }
      const host = stripBrackets(raw.trim().toLowerCase());
      if (host.startsWith('*.') && host.length > 2) {
        this.suffixes.push(host.slice(1)); // ".example.org"
      } else if (host && !host.includes('*')) {
        this.exact.add(host);
      }
    }
  }

  /** May this (absolute) URL load without a click? */
  allows(url: URL): boolean {
    if (url.protocol !== 'https:' && url.protocol !== 'http:') {
      return false;
    }
    const host = stripBrackets(url.hostname);
    return this.exact.has(host) || this.suffixes.some(suffix => host.endsWith(suffix));
  }
}

/** IPv6 hosts read "[::1]" in URLs; a list may write them either way. */
const stripBrackets = (host: string): string =>
  host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host;

type Verdict =
  | { load: 'now'; url: string }
  | { load: 'on-click'; url: string; from: string }
  | { load: 'never' };

/** What to do with an image source written by the agent. */
export function vetImageSource(src: string, policy: ImagePolicy, base: string): Verdict {
  const trimmed = src.trim();
  if (/^data:/i.test(trimmed)) {
    if (RASTER_DATA_URL.test(trimmed)) {
      return { load: 'now', url: trimmed };
    }
    const kind = /^data:([^;,]*)/i.exec(trimmed)?.[1] || 'data';
    return { load: 'on-click', url: trimmed, from: `an embedded ${kind} file` };
  }
  let url: URL;
  try {
    url = new URL(trimmed, base); // relative URLs point at the Jupyter server: same rules
  } catch {
    return { load: 'never' };
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    return { load: 'never' };
  }
  return policy.allows(url)
    ? { load: 'now', url: url.href }
    : { load: 'on-click', url: url.href, from: url.host };
}

/**
 * Called by the sanitizer on each element it keeps, in its inert document: removes every
 * attribute that would fetch by itself, except an image's `src` when the policy lets it load
 * now; an image that must wait keeps its URL in a data attribute, where nothing reads it.
 */
export function vetElement(node: Element, policy: ImagePolicy, base: string): void {
  const src = node.tagName === 'IMG' ? node.getAttribute('src') : null;
  for (const name of FETCHING_ATTRIBUTES) {
    node.removeAttribute(name);
  }
  if (src === null) {
    return;
  }
  const verdict = vetImageSource(src, policy, base);
  if (verdict.load === 'now') {
    node.setAttribute('src', verdict.url);
  } else if (verdict.load === 'on-click') {
    node.setAttribute(WAITING_SRC, verdict.url);
    node.setAttribute(WAITING_FROM, verdict.from);
  }
}

/** Replace the images of a sanitized fragment that may not load now: by a button that loads
 * it on click, or by their alt text when they cannot load at all. */
export function insertPlaceholders(root: DocumentFragment | Element): void {
  for (const img of Array.from(root.querySelectorAll('img:not([src])'))) {
    const url = img.getAttribute(WAITING_SRC);
    const from = img.getAttribute(WAITING_FROM);
    if (url === null || from === null) {
      img.replaceWith(img.getAttribute('alt') ?? '');
      continue;
    }
    img.replaceWith(
      placeholder(
        img.ownerDocument,
        url,
        from,
        img.getAttribute('alt') ?? '',
        img.getAttribute('title')
      )
    );
  }
}

function placeholder(
  doc: Document,
  url: string,
  from: string,
  alt: string,
  title: string | null
): HTMLButtonElement {
  const button = doc.createElement('button');
  button.type = 'button';
  button.className = 'streamchat-image-placeholder';
  button.dataset.testid = 'streamchat-image-placeholder';
  button.dataset.from = from;
  button.setAttribute(WAITING_SRC, url); // inert here too: only a click reads it
  // The text is the button's accessible name: what it is, where it comes from, what a click does.
  const what = alt ? `Image "${alt}"` : 'Image';
  button.textContent = `${what} from ${from}: click to load`;
  button.title = url.startsWith('data:') ? from : url;
  button.addEventListener('click', event => {
    // The image may sit in a link: the click loads the image, it does not follow the link.
    event.preventDefault();
    event.stopPropagation();
    const img = document.createElement('img');
    img.alt = alt;
    if (title !== null) {
      img.title = title;
    }
    img.src = url;
    button.replaceWith(img);
  });
  return button;
}

/** Load, in `root`, the waiting images whose host the policy now allows (a list changed). */
export function loadAllowed(root: ParentNode, policy: ImagePolicy, base: string): void {
  const waiting = root.querySelectorAll<HTMLButtonElement>('button.streamchat-image-placeholder');
  for (const button of Array.from(waiting)) {
    const url = button.getAttribute(WAITING_SRC) ?? '';
    if (!url.startsWith('data:') && vetImageSource(url, policy, base).load === 'now') {
      button.click();
    }
  }
}

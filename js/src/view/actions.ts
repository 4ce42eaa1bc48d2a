// Small action buttons (Copy, Insert, Copy as Markdown) and the clipboard they write to.
//
// A button's visible label is drawn by CSS from its `data-label` (`content: attr(data-label)`),
// and its accessible name is its `aria-label`: the label is then never part of the text of the
// message it sits in, so selecting and copying a reply, or reading its `textContent`, gives the
// reply alone.

const SVG = 'http://www.w3.org/2000/svg';

/** Icons as SVG path data on a 24-unit grid, stroked in the text colour. */
const ICONS = {
  copy: 'M9 9h10a1 1 0 0 1 1 1v10a1 1 0 0 1-1 1H9a1 1 0 0 1-1-1V10a1 1 0 0 1 1-1zM5 15H4V4h11v1',
  done: 'M5 12.5l4.5 4.5L19 7.5',
  insert: 'M12 4v10m-4.5-4.5L12 14l4.5-4.5M5 19h14'
} as const;

export type IconName = keyof typeof ICONS;

/** How long a button says "Copied" (or that copying failed) before it reads as before. */
const FEEDBACK_MS = 1500;

function icon(doc: Document, name: IconName): SVGSVGElement {
  const svg = doc.createElementNS(SVG, 'svg');
  svg.setAttribute('viewBox', '0 0 24 24');
  svg.setAttribute('aria-hidden', 'true');
  svg.setAttribute('focusable', 'false');
  svg.classList.add('streamchat-icon');
  const path = doc.createElementNS(SVG, 'path');
  path.setAttribute('d', ICONS[name]);
  svg.append(path);
  return svg;
}

export interface ActionSpec {
  testid: string;
  /** Short visible label ("Copy"). */
  label: string;
  /** Accessible name and tooltip ("Copy code"). */
  name: string;
  icon: IconName;
  onClick: (button: HTMLButtonElement) => void;
}

/** A small toolbar button. `doc` is the document it is made in (a sanitizer's fragment may
 * belong to another one until it is put in the page). */
export function actionButton(spec: ActionSpec, doc: Document = document): HTMLButtonElement {
  const button = doc.createElement('button');
  button.type = 'button';
  button.className = 'streamchat-action';
  button.dataset.testid = spec.testid;
  button.dataset.icon = spec.icon;
  button.append(icon(doc, spec.icon));
  setFace(button, spec.label, spec.name, spec.icon);
  button.addEventListener('click', event => {
    // A button inside a link (or a notebook's output) does its own thing only.
    event.preventDefault();
    event.stopPropagation();
    spec.onClick(button);
  });
  return button;
}

function setFace(button: HTMLButtonElement, label: string, name: string, iconName: IconName): void {
  button.dataset.label = label;
  button.setAttribute('aria-label', name);
  button.title = name;
  button.querySelector('path')?.setAttribute('d', ICONS[iconName]);
}

/** Buttons saying how a copy went, with their own face and the timer that restores it. */
const feedback = new WeakMap<HTMLButtonElement, { label: string; name: string; timer: number }>();

/** Put `text` on the clipboard, and have `button` say how that went for a moment. */
export async function copyWithFeedback(button: HTMLButtonElement, text: string): Promise<boolean> {
  const ok = await copyText(text);
  const shown = feedback.get(button);
  const face = shown ?? {
    label: button.dataset.label ?? '',
    name: button.getAttribute('aria-label') ?? '',
    timer: 0
  };
  clearTimeout(face.timer);
  const iconName = (button.dataset.icon ?? 'copy') as IconName;
  const said = ok ? 'Copied' : 'Copy failed';
  button.classList.toggle('streamchat-action-done', ok);
  button.classList.toggle('streamchat-action-failed', !ok);
  setFace(button, said, said, ok ? 'done' : iconName);
  face.timer = window.setTimeout(() => {
    feedback.delete(button);
    button.classList.remove('streamchat-action-done', 'streamchat-action-failed');
    setFace(button, face.label, face.name, iconName);
  }, FEEDBACK_MS);
  feedback.set(button, face);
  return ok;
}

/**
 * Write text to the clipboard. The Clipboard API exists only in secure contexts (https, or
 * localhost); a notebook served over plain http from another host falls back to the older
 * `execCommand('copy')`, which still works from a click.
 */
export async function copyText(text: string): Promise<boolean> {
  if (navigator.clipboard && window.isSecureContext) {
    try {
      await navigator.clipboard.writeText(text);
      return true;
    } catch {
      // Refused (no permission, document not focused): try the older way.
    }
  }
  const area = document.createElement('textarea');
  area.value = text;
  area.setAttribute('readonly', '');
  area.style.position = 'fixed';
  area.style.opacity = '0';
  const focused = document.activeElement as HTMLElement | null;
  document.body.append(area);
  area.select();
  let ok = false;
  try {
    ok = document.execCommand('copy');
  } catch {
    ok = false;
  }
  area.remove();
  focused?.focus();
  return ok;
}

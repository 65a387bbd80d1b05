"""The page's small scripts (gr.HTML ``js_on_load``): the token menu, the parts panel, and the bridges.

TOKEN_MENU_JS   on the columns: a click (or Enter/Space) on a token opens its menu: "why this
                token", then its alternatives, the clean top-5 with the model's p and the sampler's
                p; a click on one sends {column, step, token} to the branch bridge, "why" sends
                {tokens: [{column, step}]} to the why bridge. It also re-marks where each card parts
                from the reference column the parts panel picks. Listeners sit on the component's
                root, so they survive the re-render of every streamed update.
PARTS_JS        on the parts panel: a pair's sentence asks for both tokens' traces; the select
                picks the reference column the cards mark their parting from.
BRIDGE_JS       on a hidden gr.HTML: takes a payload as its value and fires its ``submit`` event,
                which the page handles in Python (``start_branch``, ``why_token``).
WHY_PANEL_JS    on the why panel: brings a newly shown trace into view and gives it the focus.
"""

TOKEN_MENU_JS = r"""
const close = () => element.querySelectorAll('.pg-alts').forEach((m) => m.remove());
const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;'}[c]));
const shown = (s) => JSON.stringify(s).slice(1, -1).replace(/\\n/g, '⏎');
function open(tok) {
  close();
  const card = tok.closest('.pg-card');
  if (!card) return;
  const alts = JSON.parse(tok.dataset.alts || '[]');
  const menu = document.createElement('div');
  menu.className = 'pg-alts';
  menu.setAttribute('role', 'menu');
  const rows = alts.map((a) => {
    const same = String(a.id) === tok.dataset.id ? ' pg-alt-current' : '';
    return `<button type="button" role="menuitem" class="pg-alt${same}" data-token="${a.id}">` +
      `<span class="pg-alt-text">'${esc(shown(a.text))}'</span>` +
      `<span class="pg-alt-p">p model ${a.p.toFixed(3)} → p sampler ${a.q.toFixed(3)}</span></button>`;
  }).join('');
  const why = `<button type="button" role="menuitem" class="pg-why-btn">why this token: every stage of its choice</button>`;
  menu.innerHTML = `<div class="pg-alts-head">token ${Number(tok.dataset.step) + 1}: branch from</div>${rows}${why}`;
  menu.dataset.column = card.dataset.column;
  menu.dataset.step = tok.dataset.step;
  tok.after(menu);
  const first = menu.querySelector('.pg-alt');
  if (first) first.focus();
}
function mark(ref) {
  const grid = element.querySelector('.pg-columns');
  if (!grid || !grid.dataset.parts) return;
  const parts = JSON.parse(grid.dataset.parts);
  grid.querySelectorAll('.pg-part').forEach((t) => { t.classList.remove('pg-part'); delete t.dataset.partFrom; });
  grid.querySelectorAll('.pg-card').forEach((card) => {
    const step = parts[`${ref}-${card.dataset.column}`];
    if (step === undefined || step === null) return;
    const tok = card.querySelector(`.pg-tok[data-step="${step}"]`);
    if (tok) { tok.classList.add('pg-part'); tok.dataset.partFrom = String(ref + 1); }
  });
}
if (window.pgRefListener) document.removeEventListener('pg-ref', window.pgRefListener);
window.pgRefListener = (e) => mark(e.detail.ref);
document.addEventListener('pg-ref', window.pgRefListener);
element.addEventListener('click', (e) => {
  const why = e.target.closest('.pg-why-btn');
  if (why) {
    const menu = why.closest('.pg-alts');
    const tokens = [{column: Number(menu.dataset.column), step: Number(menu.dataset.step)}];
    close();
    document.dispatchEvent(new CustomEvent('pg-why', {detail: {tokens}}));
    return;
  }
  const alt = e.target.closest('.pg-alt');
  if (alt) {
    const menu = alt.closest('.pg-alts');
    const detail = {column: Number(menu.dataset.column), step: Number(menu.dataset.step), token: Number(alt.dataset.token)};
    close();
    document.dispatchEvent(new CustomEvent('pg-branch', {detail}));
    return;
  }
  const tok = e.target.closest('.pg-tok');
  if (tok) open(tok);
  else if (!e.target.closest('.pg-alts')) close();
});
element.addEventListener('keydown', (e) => {
  if (e.key === 'Escape') { close(); return; }
  if ((e.key === 'Enter' || e.key === ' ') && e.target.classList.contains('pg-tok')) {
    e.preventDefault();
    open(e.target);
  }
});
"""

PARTS_JS = r"""
element.addEventListener('click', (e) => {
  const pair = e.target.closest('.pg-pair');
  if (!pair) return;
  const step = Number(pair.dataset.step);
  const tokens = [{column: Number(pair.dataset.a), step}, {column: Number(pair.dataset.b), step}];
  document.dispatchEvent(new CustomEvent('pg-why', {detail: {tokens, sentence: pair.textContent}}));
});
element.addEventListener('change', (e) => {
  if (e.target.classList.contains('pg-ref')) {
    document.dispatchEvent(new CustomEvent('pg-ref', {detail: {ref: Number(e.target.value)}}));
  }
});
"""


def bridge_js(event: str) -> str:
    """A hidden gr.HTML that forwards the document's ``event`` to Python as its value, then ``submit``."""
    name = "pgBridge_" + event.replace("-", "_")
    return f"""
if (window.{name}) document.removeEventListener('{event}', window.{name});
window.{name} = (e) => {{
  props.value = JSON.stringify({{...e.detail, nonce: Date.now()}});
  trigger('submit');
}};
document.addEventListener('{event}', window.{name});
"""


BRIDGE_JS = bridge_js("pg-branch")
WHY_BRIDGE_JS = bridge_js("pg-why")

WHY_PANEL_JS = r"""
new MutationObserver(() => {
  const panel = element.querySelector('#pg-why-panel');
  if (panel && panel.dataset.shown !== '1') {
    panel.dataset.shown = '1';
    panel.scrollIntoView({block: 'nearest'});
    panel.focus({preventScroll: true});
  }
}).observe(element, {childList: true, subtree: true});
"""

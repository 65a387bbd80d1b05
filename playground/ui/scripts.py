"""The page's two small scripts (gr.HTML ``js_on_load``): the token menu and the bridge that starts a branch.

TOKEN_MENU_JS   on the columns: a click (or Enter/Space) on a token opens its alternatives, the
                clean top-5 with the model's p and the sampler's p; a click on one sends
                {column, step, token} to the bridge. Listeners sit on the component's root, so
                they survive the re-render of every streamed update.
BRIDGE_JS       on a hidden gr.HTML: takes that payload as its value and fires its ``submit``
                event, which the page handles in Python (``start_branch``).
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
  menu.innerHTML = `<div class="pg-alts-head">token ${Number(tok.dataset.step) + 1}: branch from</div>${rows}`;
  menu.dataset.column = card.dataset.column;
  menu.dataset.step = tok.dataset.step;
  tok.after(menu);
  const first = menu.querySelector('.pg-alt');
  if (first) first.focus();
}
element.addEventListener('click', (e) => {
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

BRIDGE_JS = r"""
if (window.pgBranchListener) document.removeEventListener('pg-branch', window.pgBranchListener);
window.pgBranchListener = (e) => {
  props.value = JSON.stringify({...e.detail, nonce: Date.now()});
  trigger('submit');
};
document.addEventListener('pg-branch', window.pgBranchListener);
"""

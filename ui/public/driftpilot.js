// DriftPilot's additions to Chainlit's page (ui/chainlit.toml: custom_js). Chainlit's login form
// has a title, two labels and a button, all translatable, but no place for a hint; this script
// adds the hint under the title. Its words come from the same translation file as the rest of
// the page (auth.login.hint in ui/translations/en-US.json), so they live in one place.
(() => {
  "use strict";
  const HINT_ID = "driftpilot-signin-hint";
  const rootMeta = document.querySelector('meta[property="og:root_path"]');
  const root = rootMeta ? rootMeta.getAttribute("content") || "" : "";
  // Chainlit answers only language codes of this shape; it falls back to en-US itself.
  const language = /^[a-zA-Z]{2,3}(-[a-zA-Z0-9]{2,4})?$/.test(navigator.language)
    ? navigator.language
    : "en-US";
  let hint = null;

  // `text` in backquotes becomes <code>, the rest plain text nodes (never innerHTML).
  function render(text) {
    const p = document.createElement("p");
    p.id = HINT_ID;
    p.className = "text-sm text-muted-foreground";
    text.split("`").forEach((part, i) => {
      if (i % 2 === 1) {
        const code = document.createElement("code");
        code.textContent = part;
        p.appendChild(code);
      } else if (part) {
        p.appendChild(document.createTextNode(part));
      }
    });
    return p;
  }

  function place() {
    if (hint === null || !window.location.pathname.endsWith("/login")) return;
    if (document.getElementById(HINT_ID)) return;
    const title = document.querySelector("form h1");
    if (title === null) return; // the form is not drawn yet: the observer calls again
    title.insertAdjacentElement("afterend", render(hint));
  }

  fetch(`${root}/project/translations?language=${encodeURIComponent(language)}`)
    .then((response) => {
      if (!response.ok) throw new Error(`translations: HTTP ${response.status}`);
      return response.json();
    })
    .then((body) => {
      const text = body && body.translation && body.translation.auth
        && body.translation.auth.login && body.translation.auth.login.hint;
      if (typeof text !== "string") throw new Error("translations: no auth.login.hint");
      hint = text;
      place();
      new MutationObserver(place).observe(document.body, { childList: true, subtree: true });
    })
    .catch((error) => console.error("DriftPilot sign-in hint:", error));
})();

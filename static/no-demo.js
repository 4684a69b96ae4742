// `/phone` on a gateway without `--demo`: the page that says what to use
// instead, in the browser's language.
import { tNodes, translatePage } from "./i18n.js";

translatePage();
const code = (text) => {
  const node = document.createElement("code");
  node.textContent = text;
  return node;
};
document
  .getElementById("nodemo-how")
  .replaceChildren(...tNodes("nodemo.how", { cli: code("pairgate phone"), endpoint: code("/ws/phone") }));

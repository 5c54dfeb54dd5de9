// Node 22's `node --test tests/browser/` treats the directory as a module path (it does not scan
// it), which resolves here through package.json "main". Equivalent: node --test 'tests/browser/*.test.mjs'
import './assets.test.mjs';
import './sale_page.test.mjs';

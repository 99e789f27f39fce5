// Log in with a user name and password (users are made with `twinfleet user add`).
import { login, session } from '../api.js';
import { loggedIn } from '../app.js';
import { field, h, notice, pageTitle } from '../ui.js';

export function title() {
  return 'Log in';
}

export function mount(main, params) {
  const next = params.query.get('next') || '#/fleet';
  if (session.user) {
    loggedIn(next);
    return () => {};
  }
  const message = h('div', { class: 'message' });
  const user = h('input', { name: 'username', autocomplete: 'username', required: true });
  const password = h('input', {
    name: 'password', type: 'password', autocomplete: 'current-password', required: true,
  });
  const submit = h('button', { type: 'submit' }, 'Log in');
  const form = h('form', { class: 'login', 'aria-describedby': 'login-help' },
    pageTitle('twinfleet'),
    h('p', { id: 'login-help' }, 'Log in with your twinfleet user name and password.'),
    field('User name', user),
    field('Password', password),
    submit,
    message);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    submit.disabled = true;
    message.replaceChildren();
    try {
      await login(user.value.trim(), password.value);
      loggedIn(next);
    } catch (error) {
      message.append(notice(error.message));
      password.value = '';
      password.focus();
    } finally {
      submit.disabled = false;
    }
  });
  main.append(form);
  user.focus();
  return () => {};
}
